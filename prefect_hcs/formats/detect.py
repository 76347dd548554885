"""Open any supported plate by URL, and read single TIFF planes through fsspec.

Everything goes through an fsspec filesystem so that a plate on local disk, in memory, or behind any
URL fsspec understands is read by the same code. The microscope handlers are imported lazily so
that they can use the TIFF helpers here without an import cycle.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import tifffile
from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.geometry import check_header
from prefect_hcs.formats.layout import ImageRef, PlateError, PlateLayout, split_well

FORMATS = ("auto", "imagexpress", "phenix", "cellvoyager")
PHENIX_INDEX_NAMES = ("Index.idx.xml", "Index.xml")
_BYTES_RE = re.compile(r"""b(['"]).*?(?<!\\)\1""")


@dataclass(frozen=True)
class TiffHeader:
    """What one TIFF's first page says without reading its pixels."""

    shape: tuple[int, int]
    dtype: str
    description: str


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


def _quiet(exc: BaseException) -> str:
    """An exception's message without the file bytes tifffile quotes (``not a TIFF file b'…'``)."""
    return _BYTES_RE.sub("<file bytes not shown>", str(exc))


def read_tiff(
    fs: AbstractFileSystem, path: str, expect_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Read one 2-D TIFF plane; a missing, corrupt or truncated file raises PlateError naming it.

    With `expect_shape` (the plate's declared plane shape) the header is checked first, so a
    header claiming another size is refused before its pixels are allocated.
    """
    where = display(fs, path)
    try:
        with fs.open(path, "rb") as fh:
            if expect_shape is not None:
                check_header(fh, where, expect_shape)
            data = fh.read()
    except FileNotFoundError as exc:
        raise PlateError(f"image file not found: {where}") from exc
    try:
        array = tifffile.imread(io.BytesIO(data), key=0)
    except Exception as exc:  # tifffile raises many types for damaged files
        if "imagecodecs" in str(exc):
            raise PlateError(
                f"cannot decode TIFF {where}: its compression needs the 'imagecodecs' package, "
                "which is not installed here. Install it (pip install imagecodecs) where the "
                "plate is read."
            ) from exc
        raise PlateError(
            f"cannot read TIFF {where} ({len(data)} bytes): {_quiet(exc)}. The file is corrupt or "
            "truncated; copy or export it again."
        ) from exc
    array = np.asarray(array)
    if array.ndim != 2:
        array = np.squeeze(array)
    if array.ndim != 2:
        raise PlateError(f"TIFF {where} holds an array of shape {array.shape}, not a 2-D plane")
    return array


def check_decodable(
    fs: AbstractFileSystem, samples: Mapping[str, str | Sequence[str]]
) -> list[str]:
    """Decode one plane per TIFF compression ({compression name: path(s) using it}).

    Headers say nothing about whether the codec is available; decoding a plane of each
    compression at compile time turns a failure at the first pixel read of a run into one clear
    `PlateError` from `plan`. When a sample fails but another file of the same compression
    decodes, the codec works and that file is damaged: a warning (its well fails when read).
    """
    warnings: list[str] = []
    for compression, paths in sorted(samples.items()):
        paths = [paths] if isinstance(paths, str) else list(paths)
        if compression.upper() == "NONE" or not paths:
            continue
        failures: list[PlateError] = []
        for path in paths:
            try:
                read_tiff(fs, path)
                break
            except PlateError as exc:
                failures.append(exc)
        else:
            raise failures[0]
        warnings += [str(exc) for exc in failures]
    return warnings


def read_tiff_header(fs: AbstractFileSystem, path: str) -> TiffHeader:
    """Shape, dtype and description of a TIFF's first page, reading only its header bytes."""
    where = display(fs, path)
    try:
        with fs.open(path, "rb") as fh, tifffile.TiffFile(fh) as tif:
            page = tif.pages.first
            shape = tuple(int(n) for n in page.shape if n != 1) or (1, 1)
            dtype = np.dtype(page.dtype).name
            description = page.description or ""
    except FileNotFoundError as exc:
        raise PlateError(f"image file not found: {where}") from exc
    except Exception as exc:
        raise PlateError(f"cannot read the TIFF header of {where}: {_quiet(exc)}") from exc
    if len(shape) == 1:
        shape = (1, shape[0])
    if len(shape) != 2:
        raise PlateError(f"TIFF {where} has a first page of shape {shape}, not a 2-D plane")
    return TiffHeader(shape=(shape[0], shape[1]), dtype=dtype, description=description)


def read_plane(
    url_or_fs: str | AbstractFileSystem,
    ref: ImageRef,
    storage_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Pixels of one plane of a layout; `url_or_fs` is the plate URL or its filesystem."""
    fs = resolve(url_or_fs, storage_options)[0] if isinstance(url_or_fs, str) else url_or_fs
    return read_tiff(fs, ref.path)


def detect_format(fs: AbstractFileSystem, root: str) -> str:
    """'imagexpress' (a .HTD, or MetaXpress-named TIFFs), 'phenix' (a Harmony index),
    'cellvoyager' (.mlf); else PlateError naming what the folder holds when it is another kind
    of plate or a Zarr store."""
    from prefect_hcs.formats.cellvoyager import find_mlf
    from prefect_hcs.formats.identify import describe_foreign
    from prefect_hcs.formats.imagexpress import find_htd
    from prefect_hcs.formats.imagexpress_scan import looks_like_metaxpress
    from prefect_hcs.formats.phenix import find_index

    if find_htd(fs, root) is not None:
        return "imagexpress"
    if find_index(fs, root) is not None:
        return "phenix"
    if find_mlf(fs, root) is not None:
        return "cellvoyager"
    if looks_like_metaxpress(fs, root):
        return "imagexpress"
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
    TIFF compression found (so a codec problem is a compile-time error)."""
    from prefect_hcs.formats.cellvoyager import open_cellvoyager
    from prefect_hcs.formats.imagexpress import open_imagexpress
    from prefect_hcs.formats.phenix import open_phenix

    if format not in FORMATS:
        raise PlateError(
            f"unknown plate format {format!r}: use one of {', '.join(FORMATS)} "
            "(OMERO plates are opened by the omero storage layer)"
        )
    fs, root = resolve(url, storage_options)
    if not fs.isdir(root):
        raise PlateError(f"plate folder not found: {display(fs, root)} (from URL {url!r})")
    kind = detect_format(fs, root) if format == "auto" else format
    if kind == "imagexpress":  # decodes one plane per compression from the headers it reads
        return open_imagexpress(url, storage_options, fs=fs)
    opener = open_cellvoyager if kind == "cellvoyager" else open_phenix
    layout = opener(url, storage_options, fs=fs)
    from prefect_hcs.formats.codecs import verify_codecs

    if more := verify_codecs(fs, layout):
        layout = layout.model_copy(update={"warnings": (*layout.warnings, *more)})
    return layout


def plate_sort_key(ref: ImageRef) -> tuple[int, int, int, int, int, int]:
    """Stable plane order: well (row, column), site, timepoint, channel, z."""
    row, col = split_well(ref.well)
    return (row, col, ref.site, ref.timepoint, ref.channel, ref.z)


def check_complete(where: str, images: list[ImageRef], hint: str = "") -> None:
    """All-or-nothing check kept for handlers not yet converted: absent planes count as missing.

    Handlers should call `prefect_hcs.formats.completeness.plane_completeness` instead and put
    the absent planes it returns into `PlateLayout.absent`.
    """
    from prefect_hcs.formats.completeness import plane_completeness

    absent = plane_completeness(where, images, hint=hint)
    if absent:
        shown = listed([f"({a.well}, {a.site}, {a.channel}, {a.z}, {a.timepoint})" for a in absent])
        raise PlateError(
            f"{len(absent)} planes missing in {where}: every well must have every site, channel, "
            f"z-plane and timepoint found in the plate. Missing (well, site, channel, z, timepoint): "
            f"{shown}.{hint} Re-export the plate, or drop the incomplete wells."
        )
