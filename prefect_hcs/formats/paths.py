"""One containment rule for everything a plate handler reads: it must resolve inside the plate.

Vendor metadata names files (a Harmony ``<URL>``, a CellVoyager record, an HTD-derived name). A
hostile or broken index can name ``../../outside/x.tiff``, an absolute path, or a plane that is a
symlink to a file elsewhere; reading it would leak data outside the plate into the output (or,
through an error message, to the console). Handlers therefore join every name with `join_inside`
and check every file they will read with `ensure_inside`, on the very path that is later read.

Normalisation is purely lexical (``posixpath.normpath``) for every filesystem; on filesystems
that have symlinks (the local one) the real path is resolved as well and must stay inside the
real plate root.
"""

from __future__ import annotations

import os
import posixpath
import re

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.layout import PlateError

_ABSOLUTE = re.compile(r"^(/|\\|[A-Za-z]:[\\/]|[A-Za-z][A-Za-z0-9+.-]*://)")


def _is_local(fs: AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _lexically_inside(root: str, path: str) -> bool:
    root = posixpath.normpath(root)
    path = posixpath.normpath(path)
    return path == root or path.startswith(root.rstrip("/") + "/")


def inside_root(fs: AbstractFileSystem, root: str, path: str) -> bool:
    """True if `path` resolves inside the folder `root` of `fs` (symlinks followed if local).

    Args:
        fs: The plate's filesystem.
        root: The plate folder (no protocol), as the handler resolved it.
        path: A path on `fs` that the handler is about to read.

    Returns:
        False if the normalised path leaves `root`, or if `fs` is local and the real path (all
        symlinks resolved) leaves the real `root`.
    """
    if not _lexically_inside(root, path):
        return False
    if not _is_local(fs):
        return True
    real_root = os.path.realpath(root)
    real = os.path.realpath(posixpath.normpath(path))
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def join_inside(root: str, folder: str, name: str, where: str, what: str) -> str:
    """`folder`/`name` normalised; PlateError if `name` is absolute or climbs out of `root`.

    `where` names the metadata file and `what` the entry (e.g. ``<URL> of <Image> 0101K1F1P1R1``),
    so the message says which line of which file to fix. Backslashes (Windows exports) count as
    separators.
    """
    clean = name.strip().replace("\\", "/")
    if not clean or _ABSOLUTE.match(name.strip()):
        raise PlateError(
            f"{where}: {what} is {name!r}, an absolute path or URL; plate metadata may only name "
            "files inside the plate folder by a relative path. Re-export the plate."
        )
    path = posixpath.normpath(f"{folder}/{clean}")
    if not _lexically_inside(root, path):
        raise PlateError(
            f"{where}: {what} is {name!r}, which points outside the plate folder; plate "
            "metadata may only name files inside it. Re-export the plate or fix the index."
        )
    return path


def ensure_inside(fs: AbstractFileSystem, root: str, path: str, where: str) -> None:
    """PlateError naming `path` if it does not resolve inside `root` (e.g. a symlink out).

    The message never shows where the link points, nor anything read from it.
    """
    if not inside_root(fs, root, path):
        raise PlateError(
            f"{where}: plane {path} resolves to a file outside the plate folder (a symlink "
            "out of the plate?); refusing to read it. Copy the file into the plate instead."
        )


def existing_files(fs: AbstractFileSystem, paths: list[str]) -> dict[str, int]:
    """{path: size in bytes} of those `paths` that are files, from one listing per folder.

    Presence is checked on exactly the normalised paths the handler will read; the sizes come
    free with the listing (padding detection uses them).
    """
    by_folder: dict[str, list[str]] = {}
    for path in paths:
        by_folder.setdefault(path.rsplit("/", 1)[0] or "/", []).append(path)
    found: dict[str, int] = {}
    for folder, members in by_folder.items():
        try:
            entries = fs.ls(folder, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            continue
        files = {
            e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
            for e in entries
            if e.get("type") != "directory"
        }
        for path in members:
            name = path.rsplit("/", 1)[-1]
            if name in files:
                found[path] = files[name]
    return found
