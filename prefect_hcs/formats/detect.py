"""Open any supported plate by URL: ask every registered vendor handler, open with the surest.

Vendors register a `PlateHandler` (see `prefect_hcs.formats.handlers`) when imported, and the
``prefect_hcs.formats`` package imports them all, so nothing here names a vendor. The TIFF and
filesystem helpers callers used to import from here are re-exported for them.
"""

from __future__ import annotations

from typing import Any

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.fsio import display, list_names, listed, resolve
from prefect_hcs.formats.handlers import Evidence, get_handler, handlers
from prefect_hcs.formats.identify import describe_foreign
from prefect_hcs.formats.layout import PlateError, PlateLayout
from prefect_hcs.formats.tiff import TiffHeader, read_plane, read_tiff, read_tiff_header

__all__ = [
    "TiffHeader",
    "detect_format",
    "display",
    "list_names",
    "listed",
    "open_plate",
    "read_plane",
    "read_tiff",
    "read_tiff_header",
    "resolve",
]


def format_names() -> tuple[str, ...]:
    """The values ``format=`` accepts: ``auto`` and every registered vendor."""
    return ("auto", *(h.name for h in handlers()))


def detect_format(fs: AbstractFileSystem, root: str) -> str:
    """The name of the vendor whose plate `root` holds (strongest evidence, then registration
    order); else PlateError naming what the folder holds when it is another kind of plate or a
    Zarr store."""
    best, evidence = None, Evidence.NONE
    for handler in handlers():
        claim = handler.detect(fs, root)
        if claim > evidence:
            best, evidence = handler.name, claim
    if best is not None:
        return best
    where = display(fs, root)
    foreign = describe_foreign(fs, root)
    if foreign:
        raise PlateError(
            f"{where} holds {foreign}, which prefect-hcs does not read as a plate. Supported: "
            "ImageXpress/MetaXpress folders and exports, Opera Phenix/Operetta (Harmony) exports, "
            "Yokogawa CellVoyager measurements."
        )
    raise PlateError(
        f"no plate metadata in {where}: expected an ImageXpress '<plate>.HTD' file or "
        "MetaXpress images ('<plate>_<well>_s<site>_w<n><GUID>.tif', in the folder or in "
        "TimePoint_<n>/ZStep_<n>/), an Opera Phenix/Operetta 'Index.idx.xml'/'Index.xml' "
        "(in the folder or Images/) or a Yokogawa CellVoyager 'MeasurementData.mlf'. Point the "
        "URL at the plate folder, or pass format=..."
    )


def open_plate(
    url: str,
    storage_options: dict[str, Any] | None = None,
    format: str = "auto",
) -> PlateLayout:
    """Discover a plate's layout from its folder URL: headers only, plus one decoded plane per
    TIFF compression found (so a codec problem is a compile-time error).

    Raises:
        PlateError: unknown `format`, no such folder, or a folder no handler recognises.
    """
    if format != "auto" and get_handler(format) is None:
        raise PlateError(
            f"unknown plate format {format!r}: use one of {', '.join(format_names())} "
            "(OMERO plates are opened by the omero storage layer)"
        )
    fs, root = resolve(url, storage_options)
    if not fs.isdir(root):
        raise PlateError(f"plate folder not found: {display(fs, root)} (from URL {url!r})")
    kind = detect_format(fs, root) if format == "auto" else format
    handler = get_handler(kind)
    assert handler is not None  # detect_format returns registered names only
    return handler.open(url, storage_options, fs)
