"""Read TIFF planes and headers through fsspec, refusing damaged or lying files clearly.

Every vendor stores planes as TIFFs. A missing, corrupt or truncated file raises `PlateError`
naming it; a header claiming another plane shape than the plate's is refused before its pixels
are allocated (`check_header`); codecs are proven at compile time (`check_decodable`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import tifffile
from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.fsio import display, resolve
from prefect_hcs.formats.layout import ImageRef, PlateError

__all__ = [
    "TiffHeader",
    "check_decodable",
    "check_header",
    "quiet_tifffile",
    "read_plane",
    "read_tiff",
    "read_tiff_header",
]

_BYTES_RE = re.compile(r"""b(['"]).*?(?<!\\)\1""")


@dataclass(frozen=True)
class TiffHeader:
    """What one TIFF's first page says without reading its pixels."""

    shape: tuple[int, int]
    dtype: str
    description: str
    compression: str = ""  # tifffile's name of the page's compression, e.g. "NONE", "LZW"


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
    """Shape, dtype, description and compression of a TIFF's first page, reading only its header."""
    where = display(fs, path)
    try:
        with fs.open(path, "rb") as fh, tifffile.TiffFile(fh) as tif:
            page = tif.pages.first
            shape = tuple(int(n) for n in page.shape if n != 1) or (1, 1)
            dtype = np.dtype(page.dtype).name
            description = page.description or ""
            compression = getattr(page.compression, "name", str(page.compression))
    except FileNotFoundError as exc:
        raise PlateError(f"image file not found: {where}") from exc
    except Exception as exc:
        raise PlateError(
            f"cannot read the TIFF header of {where}: {_quiet(exc)}. The file is corrupt or "
            "truncated; copy or export it again."
        ) from exc
    if len(shape) == 1:
        shape = (1, shape[0])
    if len(shape) != 2:
        raise PlateError(f"TIFF {where} has a first page of shape {shape}, not a 2-D plane")
    return TiffHeader((shape[0], shape[1]), dtype, description, compression)


def read_plane(
    url_or_fs: str | AbstractFileSystem,
    ref: ImageRef,
    storage_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Pixels of one plane of a layout; `url_or_fs` is the plate URL or its filesystem."""
    fs = resolve(url_or_fs, storage_options)[0] if isinstance(url_or_fs, str) else url_or_fs
    return read_tiff(fs, ref.path)


def check_header(fh: IO[bytes], where: str, expect_shape: tuple[int, int]) -> None:
    """Raise `PlateError` if the TIFF open in `fh` declares another plane shape (reads the header
    only; leaves `fh` at its start)."""
    try:
        with quiet_tifffile(), tifffile.TiffFile(fh) as tif:
            shape = tuple(int(n) for n in tif.pages.first.shape if n != 1) or (1, 1)
    except Exception:
        fh.seek(0)
        return  # undecodable: the reader reports it as corrupt, with the file size
    fh.seek(0)
    if len(shape) == 1:
        shape = (1, shape[0])
    if tuple(shape) != tuple(expect_shape):
        raise PlateError(
            f"TIFF header of {where} claims a {_size(shape)} plane, but the plate's planes are "
            f"{_size(expect_shape)}; refused before reading its pixels. The file is damaged or "
            "from another acquisition: replace it and retry the plate"
        )


@contextlib.contextmanager
def quiet_tifffile() -> Iterator[None]:
    """Keep tifffile's warnings about the damaged files we are refusing off the console."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _size(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)
