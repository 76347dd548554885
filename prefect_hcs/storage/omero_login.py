"""How prefect-hcs logs in to OMERO: a login, the factory that turns it into an adapter, blocks.

`OmeroLogin` holds where a server is and who logs in (the password as a `SecretStr`, never shown).
`OmeroLogin.adapter` makes an `OmeroAdapter`: `blitz_adapter` (omero-py's BlitzGateway) unless a
test or the demo installed another gateway factory with `omero_hook.install_gateway_factory`
(``prefect_hcs.testing.standin_hook.install_standin``). Nothing in the product installs one, so
no configuration value can reach a test double.

`login_from_block` reads a saved ``omero-credentials`` block by name through Prefect, so a worker
process needs only the block's name (the Block class itself lives in `prefect_hcs.blocks`, a
higher layer, and is a thin wrapper over this module).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from prefect_hcs.storage.omero_blitz import BlitzGatewayAdapter
from prefect_hcs.storage.omero_gateway import OmeroAdapter
from prefect_hcs.storage.omero_hook import gateway_factory

__all__ = ["BLOCK_TYPE_SLUG", "DEFAULT_PORT", "OmeroLogin", "blitz_adapter", "login_from_block"]

#: Prefect block type slug of the OMERO credentials block (`prefect_hcs.blocks.OmeroCredentials`).
BLOCK_TYPE_SLUG = "omero-credentials"
DEFAULT_PORT = 4064


@dataclass(frozen=True)
class OmeroLogin:
    """Where an OMERO server is and who logs in; the password never appears in its repr."""

    host: str
    username: str
    password: SecretStr | None = None
    port: int = DEFAULT_PORT
    group: str | None = None
    secure: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.password, str):  # accept a plain string, keep it secret from here on
            object.__setattr__(self, "password", SecretStr(self.password))

    def adapter(self) -> OmeroAdapter:
        """A gateway adapter for this login (it logs in on first use): omero-py's BlitzGateway,
        unless a test or the demo installed another factory (`omero_hook`)."""
        factory = gateway_factory()
        return blitz_adapter(self) if factory is None else factory(self)

    def connect(self) -> OmeroAdapter:
        """An adapter that has already logged in, so bad credentials fail here, clearly."""
        adapter = self.adapter()
        adapter.connect()
        return adapter

    def key(self) -> str:
        """Identifies the login (and the factory serving it) without revealing the password."""
        secret = self.password.get_secret_value() if self.password is not None else None
        digest = "" if secret is None else hashlib.sha256(secret.encode()).hexdigest()[:16]
        fields = (self.host, self.port, self.username, self.group, self.secure, digest)
        return "|".join(map(str, (id(gateway_factory()), *fields)))

    def describe(self) -> str:
        """``user@host:port`` for messages."""
        return f"{self.username}@{self.host}:{self.port}"


def blitz_adapter(login: OmeroLogin) -> OmeroAdapter:
    """The real adapter: omero-py's BlitzGateway (imported when it first connects)."""
    return BlitzGatewayAdapter(
        login.host,
        login.username,
        login.password if login.password is not None else SecretStr(""),
        port=login.port,
        group=login.group,
        secure=login.secure,
    )


def login_from_block(name: str) -> OmeroLogin:
    """The login saved as the ``omero-credentials`` block `name` on the Prefect server.

    Raises:
        ValueError: no such block (Prefect's message names the block and its type).
    """
    from prefect.blocks.core import Block

    block: Any = Block.load(f"{BLOCK_TYPE_SLUG}/{name}")
    return OmeroLogin(
        host=block.host,
        username=block.username,
        password=block.password,
        port=block.port,
        group=block.group,
        secure=block.secure,
    )
