"""Where `make-plate` may write: an absent or empty folder, or (with overwrite) its own plate.

Writing a synthetic plate into a folder that already holds files would mix two plates (and
overwrite part of a real one). So a non-empty target is refused; with ``overwrite`` it is removed
first, but only when it is a plate `make-plate` generated (its ``ground_truth.json`` carries the
generator's keys): a folder of anything else is never deleted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from prefect_hcs.formats.fsio import display, list_names, resolve
from prefect_hcs.formats.layout import PlateError

#: Keys `make_plate` writes into ground_truth.json; together they mark a generated plate.
_TRUTH_KEYS = {"format", "plate_name", "wells", "grid", "tile_size", "seed"}


T = TypeVar("T")


class PlateTargetError(PlateError):
    """The folder given to make-plate cannot take a new plate."""


def write_plate_into(url: str, overwrite: bool, write: Callable[[str], T]) -> T:
    """Call `write(target_url)` so that `url` ends up holding only the new plate.

    An absent or empty folder is written directly. A generated plate (with `overwrite`) is
    replaced only after the new one was written completely beside it, so a failing `write`
    (bad arguments, disk full) leaves the old plate as it was.
    """
    if not prepare_plate_target(url, overwrite):
        return write(url)
    fs, root = resolve(url)
    staging = f"{root}.make-plate-partial"
    if fs.exists(staging):
        fs.rm(staging, recursive=True)
    try:
        result = write(staging if "://" not in url else f"{url.split('://', 1)[0]}://{staging}")
    except BaseException:
        if fs.exists(staging):
            fs.rm(staging, recursive=True)
        raise
    fs.rm(root, recursive=True)
    fs.mv(staging, root, recursive=True)
    return result


def prepare_plate_target(url: str, overwrite: bool = False) -> bool:
    """Check a plate can be written to `url`: True if it holds a generated plate to replace."""
    fs, root = resolve(url)
    where = display(fs, root)
    if fs.isfile(root):
        raise PlateTargetError(f"{where} is a file; give a folder for the plate")
    names = list_names(fs, root)
    if not names:
        return False
    listing = ", ".join(sorted(names)[:5]) + (" …" if len(names) > 5 else "")
    if not overwrite:
        raise PlateTargetError(
            f"{where} is not empty ({listing}): writing a plate there would mix or overwrite "
            "files. Choose a new folder, or pass --overwrite to replace a plate make-plate wrote"
        )
    if not _is_generated(fs, root, names):
        raise PlateTargetError(
            f"{where} holds files that are not a plate make-plate wrote ({listing}); refusing to "
            "delete them, even with --overwrite. Choose a new folder"
        )
    return True


def _is_generated(fs, root: str, names: dict[str, str]) -> bool:  # noqa: ANN001 - fsspec fs
    if names.get("ground_truth.json") != "file":
        return False
    try:
        with fs.open(f"{root}/ground_truth.json", "rb") as fh:
            truth = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return False
    return isinstance(truth, dict) and set(truth) >= _TRUTH_KEYS
