"""The OMERO credentials Block: where an OMERO server is and how to log in.

Runs and deployments refer to it by name (``{"credentials_block": "my-omero"}`` as the storage
options of an ``omero://`` URL), so the password travels neither in flow-run parameters nor in
plans: each worker process loads the block and connects itself. A thin wrapper: logging in is
`prefect_hcs.storage.omero_login`'s job (which also reads the block by name in workers).
"""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

from prefect_hcs.storage.omero_gateway import OmeroAdapter
from prefect_hcs.storage.omero_login import BLOCK_TYPE_SLUG, DEFAULT_PORT, OmeroLogin

_DOCS = HttpUrl("https://github.com/prefect-hcs/prefect-hcs/blob/main/docs/omero.md")


class OmeroCredentials(Block):
    """Login to an OMERO server for reading plates and attaching results as FileAnnotations."""

    _block_type_name: ClassVar[str] = "OMERO Credentials"
    _block_type_slug: ClassVar[str] = BLOCK_TYPE_SLUG
    _description: ClassVar[str] = (
        "Host, port, user, password and group of an OMERO server. prefect-hcs reads plates "
        "from it and attaches results to them as FileAnnotations."
    )
    _documentation_url: ClassVar[HttpUrl | None] = _DOCS
    _code_example: ClassVar[str] = (
        "```python\nfrom prefect_hcs.blocks.omero_credentials import OmeroCredentials\n\n"
        'adapter = OmeroCredentials.load("BLOCK_NAME").connect()\n```'
    )

    host: str = Field(description="Host name or address of the OMERO server.")
    port: int = Field(
        default=DEFAULT_PORT, description="Port of the OMERO server (Ice; 4064 by default)."
    )
    username: str = Field(description="OMERO user name.")
    password: SecretStr = Field(description="OMERO password; stored encrypted, never logged.")
    group: str | None = Field(
        default=None,
        description="OMERO group to log in to; empty means the user's default group.",
    )
    secure: bool = Field(default=True, description="Use an encrypted (SSL) connection.")

    def login(self) -> OmeroLogin:
        """These credentials as the storage layer's `OmeroLogin`."""
        return OmeroLogin(
            host=self.host,
            username=self.username,
            password=self.password,
            port=self.port,
            group=self.group,
            secure=self.secure,
        )

    def adapter(self) -> OmeroAdapter:
        """A gateway adapter for these credentials (it logs in on first use)."""
        return self.login().adapter()

    def connect(self) -> OmeroAdapter:
        """An adapter that has already logged in (so bad credentials fail here, clearly)."""
        return self.login().connect()

    def storage_options(self) -> dict[str, str]:
        """Storage options for ``omero://`` URLs that name this (saved) block, not its secret."""
        if not self._block_document_name:
            raise ValueError(
                "save the OmeroCredentials block first (block.save('name')): storage options "
                "refer to it by name so that the password never travels with a run"
            )
        return {"credentials_block": self._block_document_name}
