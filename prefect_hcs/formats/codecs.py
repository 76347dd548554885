"""Decode one plane of each TIFF compression a plate uses, at compile time, for every vendor.

Headers parse without the codec; pixels do not. Real instruments write LZW (MetaXpress, Harmony)
or deflate/zstd, so a missing or broken codec would otherwise surface at the first pixel read of
a run, once per well. `verify_codecs` samples a few headers (the first plane of each channel and
timepoint, and of each projection channel), groups them by compression and decodes up to three
files per compression: one that decodes proves the codec; if none does, one clear PlateError.
"""

from __future__ import annotations

import tifffile
from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.layout import ImageRef, PlateLayout
from prefect_hcs.formats.tiff import check_decodable

__all__ = ["verify_codecs", "with_codec_check"]

_PER_COMPRESSION = 3


def _samples(layout: PlateLayout) -> list[ImageRef]:
    """The first plane of each channel, timepoint and projection channel, plus the middle and
    last planes (so one damaged first file does not stand for the whole compression)."""
    images = layout.images
    extra = (images[len(images) // 2], images[-1]) if images else ()
    seen: set[tuple[str, int]] = set()
    out: list[ImageRef] = []
    for ref in (*images, *layout.projections):
        keys = [("c", ref.channel), ("t", ref.timepoint)]
        keys += [("p", ref.channel)] if ref.projection else []
        if any(k not in seen for k in keys):
            seen.update(keys)
            out.append(ref)
    return out + [r for r in extra if r not in out]


def _compression(fs: AbstractFileSystem, path: str) -> str | None:
    try:
        with fs.open(path, "rb") as fh, tifffile.TiffFile(fh) as tif:
            value = tif.pages.first.compression
    except Exception:  # an unreadable header fails its own well later, not the plate
        return None
    return getattr(value, "name", str(value))


def verify_codecs(fs: AbstractFileSystem, layout: PlateLayout) -> list[str]:
    """Warnings for damaged sample files; PlateError when a compression decodes nowhere."""
    by_compression: dict[str, list[str]] = {}
    for ref in _samples(layout):
        name = _compression(fs, ref.path)
        if name is not None:
            paths = by_compression.setdefault(name, [])
            if len(paths) < _PER_COMPRESSION:
                paths.append(ref.path)
    return check_decodable(fs, by_compression)


def with_codec_check(fs: AbstractFileSystem, layout: PlateLayout) -> PlateLayout:
    """`layout` with `verify_codecs`'s warnings added (PlateError when a codec is missing)."""
    if more := verify_codecs(fs, layout):
        layout = layout.model_copy(update={"warnings": (*layout.warnings, *more)})
    return layout
