"""Filesystem helpers every plate reader shares: resolve a URL, list a folder, name a path.

Everything goes through an fsspec filesystem so that a plate on local disk, in memory, or behind
any URL fsspec understands is read by the same code. No vendor knowledge here, so every vendor
module (and `detect`) can import it without an import cycle.
"""

from __future__ import annotations

from typing import Any

import fsspec
from fsspec.spec import AbstractFileSystem

__all__ = ["display", "join_url", "list_names", "listed", "resolve"]


def resolve(
    url: str,
    storage_options: dict[str, Any] | None = None,
    fs: AbstractFileSystem | None = None,
) -> tuple[AbstractFileSystem, str]:
    """(filesystem, root path without protocol or trailing slash) of a plate URL.

    With `fs` given (already resolved by the caller) only the path is normalised.
    """
    if fs is None:
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    else:
        root = fs._strip_protocol(url)
    return fs, root.rstrip("/") or "/"


def display(fs: AbstractFileSystem, path: str) -> str:
    """A path as the user would type it (with the protocol unless local), for messages."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path.lstrip('/')}"


def list_names(fs: AbstractFileSystem, path: str) -> dict[str, str]:
    """{basename: 'file'|'directory'} of a folder's direct children ({} if it is absent)."""
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out: dict[str, str] = {}
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        out[name] = "directory" if entry.get("type") == "directory" else "file"
    return out


def listed(items: list[str], limit: int = 10) -> str:
    """At most `limit` items joined for a message, with how many more were left out."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def join_url(base: str, *parts: str) -> str:
    """`base` and `parts` joined by single slashes; empty parts are skipped.

    The one URL-join of the package: works the same for paths, ``file://``, ``s3://``,
    ``memory://`` and ``omero://`` URLs (``join_url("s3://b/out/", "/P1", "A01")`` is
    ``"s3://b/out/P1/A01"``).
    """
    base = base.rstrip("/")
    return "/".join([base, *[p.strip("/") for p in parts if p]])
