"""TIFF headers against the plate's declared geometry, before any pixel is allocated.

A handler takes the plane shape of a plate from one header (its first plane). A damaged or
hostile TIFF can claim any size in its header (100000×100000 among 512² planes), and decoding it
would allocate that much. Two guards:

* at compile time `header_sample_problems` reads the headers of a sample of planes (up to
  `SAMPLE_SIZE`, spread evenly over the plate, first and last included; reading only header
  bytes) and names every plane whose header disagrees with the majority. An unreadable header
  is skipped here: a corrupt plane fails only its own well when it is read. A 10,000-plane plate
  costs 16 header reads, not 10,000;
* at run time `check_header` is called on every plane before its pixels are decoded, so a lying
  header on a plane the sample missed fails its well with a clear error instead of allocating.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.fsio import display
from prefect_hcs.formats.layout import ImageRef, PlateError
from prefect_hcs.formats.tiff import check_header, quiet_tifffile, read_tiff_header

__all__ = ["SAMPLE_SIZE", "check_header", "header_sample_problems", "quiet_tifffile", "sample_refs"]

#: Headers read by `plan` per plate (the rest are checked when each plane is read).
SAMPLE_SIZE = 16


def sample_refs(images: Sequence[ImageRef], n: int = SAMPLE_SIZE) -> list[ImageRef]:
    """Up to `n` planes spread evenly over `images`, first and last included."""
    if len(images) <= n:
        return list(images)
    step = (len(images) - 1) / (n - 1)
    return [images[round(i * step)] for i in range(n)]


def header_sample_problems(
    fs: AbstractFileSystem, images: Sequence[ImageRef], n: int = SAMPLE_SIZE
) -> list[str]:
    """One problem per sampled plane whose header shape or dtype differs from the majority."""
    headers = {}
    with quiet_tifffile():
        for ref in sample_refs(images, n):
            try:
                headers[ref.path] = read_tiff_header(fs, ref.path)
            except PlateError:
                continue  # unreadable: a corrupt plane fails only its well, when it is read
    if not headers:
        return []
    votes = Counter((h.shape, h.dtype) for h in headers.values())
    (shape, dtype), count = votes.most_common(1)[0]
    problems = []
    for path, h in headers.items():
        if (h.shape, h.dtype) != (shape, dtype):
            problems.append(
                f"TIFF header of {display(fs, path)} claims a {_size(h.shape)} {h.dtype} plane, "
                f"but the plate's other planes are {_size(shape)} {dtype} ({count} of "
                f"{len(headers)} headers read, of {len(images)} planes). The file is damaged or "
                "from another acquisition: replace it or re-export the plate"
            )
    return problems


def _size(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)
