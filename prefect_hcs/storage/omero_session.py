"""The connection behind an ``omero`` filesystem: where its adapter comes from, shared per process.

fsspec caches one filesystem instance per argument set *and thread*, so an adapter kept on the
instance would mean one OMERO login per thread. Connections therefore live in a per-process
registry keyed by the connection options (never by instance): every filesystem with the same
options shares one `Session` (its adapter and the plate trees learnt through it). A connection
comes from exactly one source: a saved credentials block (by name), a login, or an adapter given
in-process. Transient connection errors are retried here with exponential backoff.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from pydantic import SecretStr

from prefect_hcs.storage.omero_errors import OmeroConnectionError
from prefect_hcs.storage.omero_gateway import OmeroAdapter, PlateInfo
from prefect_hcs.storage.omero_hook import gateway_factory
from prefect_hcs.storage.omero_login import DEFAULT_PORT, OmeroLogin, login_from_block

__all__ = ["ConnectionOptions", "OmeroConnection", "Session"]

T = TypeVar("T")


@dataclass
class Session:
    """One adapter and what was learnt through it (plate trees do not change during a run)."""

    adapter: OmeroAdapter
    plates: dict[int, PlateInfo] = field(default_factory=dict)


_SESSIONS: dict[tuple[int, str], Session] = {}
_SESSIONS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ConnectionOptions:
    """Where an ``omero`` filesystem connects: exactly one source, named as its storage options.

    The fields are `OmeroFileSystem`'s connection keyword arguments (fsspec passes storage options
    as keyword arguments; `split` picks these out of the rest): ``credentials_block`` (a saved
    `OmeroCredentials` block, by name), ``host`` + ``user`` (+ ``password``, ``group``, ``port``,
    ``secure``), or in-process ``credentials`` (an `OmeroLogin` or the block itself) or
    ``gateway`` (an adapter).

    Raises:
        ValueError: no source or several, or a login by host without a user.
    """

    credentials_block: str | None = None
    credentials: Any = None
    host: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    group: str | None = None
    port: int = DEFAULT_PORT
    secure: bool = True
    gateway: OmeroAdapter | None = None

    def __post_init__(self) -> None:
        sources = [self.credentials_block, self.credentials, self.host, self.gateway]
        if sum(s is not None for s in sources) != 1:
            raise ValueError(
                "the omero filesystem needs exactly one connection source in its storage options: "
                "credentials_block='<block name>' (an OmeroCredentials block), host='<server>' "
                "with user='<name>', credentials=<OmeroLogin or OmeroCredentials>, or "
                "gateway=<adapter>"
            )
        if self.host is not None and not self.user:
            raise ValueError("an omero login by host needs user='<name>' in the storage options")

    @classmethod
    def split(cls, kwargs: Mapping[str, Any]) -> tuple[ConnectionOptions, dict[str, Any]]:
        """The connection options among ``kwargs``, and the other keyword arguments."""
        names = {f.name for f in fields(cls)}
        options = cls(**{k: v for k, v in kwargs.items() if k in names})
        return options, {k: v for k, v in kwargs.items() if k not in names}


def _as_login(credentials: Any) -> OmeroLogin:
    """An `OmeroLogin`, or an object that makes one (the `OmeroCredentials` block's ``login()``)."""
    return credentials if isinstance(credentials, OmeroLogin) else credentials.login()


class OmeroConnection:
    """The one connection source of a filesystem, and the shared session it leads to."""

    def __init__(self, options: ConnectionOptions) -> None:
        """Keep the one source ``options`` name (already checked by `ConnectionOptions`)."""
        credentials = options.credentials
        if options.host is not None:
            password = options.password
            secret = SecretStr(password) if password is not None else None
            credentials = OmeroLogin(
                options.host, str(options.user), secret, options.port, options.group, options.secure
            )
        self.credentials_block = options.credentials_block
        self.login: OmeroLogin | None = _as_login(credentials) if credentials else None
        self.gateway = options.gateway
        self._own = Session(options.gateway) if options.gateway is not None else None

    def describe(self) -> str:
        """Where this connection goes, without a secret: for reprs and messages."""
        if self.credentials_block is not None:
            return f"credentials block {self.credentials_block!r}"
        if self.login is not None:
            return self.login.describe()
        return repr(self.gateway)

    def key(self) -> str:
        """Registry key: the source and the gateway factory serving it (no password)."""
        if self.credentials_block is not None:
            return f"block|{id(gateway_factory())}|{self.credentials_block}"
        assert self.login is not None
        return f"login|{self.login.key()}"

    def _make_adapter(self) -> OmeroAdapter:
        login = self.login
        if login is None:
            assert self.credentials_block is not None
            login = login_from_block(self.credentials_block)
        return login.adapter()

    def session(self) -> Session:
        """This process's session for the connection (made, and logged in lazily, on first use)."""
        if self._own is not None:
            return self._own
        key = (os.getpid(), self.key())
        with _SESSIONS_LOCK:
            session = _SESSIONS.get(key)
            if session is None:
                session = _SESSIONS[key] = Session(self._make_adapter())
        return session

    @staticmethod
    def call(fn: Callable[..., T], *args: Any, retries: int, delay: float) -> T:
        """`fn(*args)`, retrying transient connection errors `retries` times with backoff.

        Raises:
            OmeroConnectionError: still failing after the last retry (says how many attempts).
        """
        for attempt in range(retries + 1):
            try:
                return fn(*args)
            except OmeroConnectionError as exc:
                if attempt >= retries:
                    raise OmeroConnectionError(
                        f"{exc} (gave up after {attempt + 1} attempts)"
                    ) from exc
                time.sleep(delay * 2**attempt)
        raise AssertionError("unreachable")
