"""Tiny PNG previews of each well's final image, for the Prefect UI. No Prefect here.

Prefect's image artifact takes a URL only, and a local server cannot serve files, so the flow
embeds these PNGs as `data:` URIs in a markdown artifact. They are written next to the
completion markers (a hidden bookkeeping folder), so a resumed run still finds the thumbnails of
wells it skips, on any filesystem (disk, `memory://`, `omero://`).
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image

#: Longest edge of a stored thumbnail (pixels). Small on purpose: dozens go into one artifact.
THUMB_PX = 96


def thumbnail_url(done_dir: str, well: str) -> str:
    """`<parent of the completion markers>/.hcs-thumbnails/<well>.png` (hidden: not a result)."""
    parent = done_dir.rstrip("/").rsplit("/", 1)[0]
    return f"{parent}/.hcs-thumbnails/{well}.png"


def encode_png(array: np.ndarray, max_px: int = THUMB_PX) -> bytes:
    """Grayscale PNG of channel 1 of a TCZQYX array: first timepoint, max over z, sites tiled.

    Contrast is stretched between the 0.5th and 99.8th percentiles, like a viewer's auto-levels.
    A mosaic of 4 × `max_px` or more is first decimated to 2-4 × `max_px` (every k-th pixel):
    the preview looks the same and costs a tenth (16 → 1.5 ms for a stitched ~1000² well).
    """
    plane = np.asarray(array)[0, 0].max(axis=0)  # (Q, Y, X)
    mosaic = _tile(plane)
    step = max(1, max(mosaic.shape, default=0) // (2 * max_px))
    mosaic = mosaic[::step, ::step]
    lo, hi = np.percentile(mosaic, (0.5, 99.8)) if mosaic.size else (0.0, 0.0)
    scaled = (mosaic.astype(np.float32) - lo) / (hi - lo) if hi > lo else mosaic * 0.0
    u8 = (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(u8, mode="L")
    image.thumbnail((max_px, max_px), Image.Resampling.BOX)
    return _png(image)


def shrink_png(png: bytes, max_px: int) -> bytes:
    """The same PNG with its longest edge at most `max_px` (unchanged if already small)."""
    image = Image.open(io.BytesIO(png))
    if max(image.size) <= max_px:
        return png
    image.thumbnail((max_px, max_px), Image.Resampling.BOX)
    return _png(image)


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, so a markdown artifact shows the image without file hosting."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _tile(sites: np.ndarray) -> np.ndarray:
    """Sites side by side in a near-square grid (one site: itself)."""
    n, y, x = sites.shape
    if n == 1:
        return sites[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros((rows * y, cols * x), dtype=sites.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * y : (r + 1) * y, c * x : (c + 1) * x] = sites[i]
    return out


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
