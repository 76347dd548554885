"""The plate layout: what a microscope handler discovers about a plate, before any pixel is read.

Every handler (ImageXpress, Opera Phenix, OMERO) produces the same `PlateLayout`, so the compiler
never needs to know which microscope made the plate. Wells are always named in the canonical
``A01`` form (row letter(s) + two-digit column); sites are numbered 1.. in row-major raster order
of the acquisition grid (site 1 is the top-left tile), whatever order the microscope used.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from prefect_hcs.errors import UserFacingError

PlateFormat = Literal["imagexpress", "phenix", "omero"]

_WELL_RE = re.compile(r"^([A-Z]{1,2})(\d{1,3})$")


class PlateError(UserFacingError, ValueError):
    """A plate cannot be used as given. The message names the plate, the file and the fix."""


def row_name(row_index: int) -> str:
    """Plate row letters from a 0-based index: 0 -> 'A', 25 -> 'Z', 26 -> 'AA'."""
    if row_index < 0:
        raise ValueError(f"row index must be >= 0, got {row_index}")
    letters = ""
    n = row_index
    while True:
        letters = chr(65 + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return letters


def well_id(row_index: int, column_index: int) -> str:
    """Canonical well id from 0-based row and column indices: (1, 2) -> 'B03'."""
    if row_index < 0 or column_index < 0:
        raise ValueError(f"row and column indices must be >= 0, got ({row_index}, {column_index})")
    return f"{row_name(row_index)}{column_index + 1:02d}"


def split_well(well: str) -> tuple[int, int]:
    """0-based (row, column) of a canonical well id: 'B03' -> (1, 2)."""
    m = _WELL_RE.match(well)
    if not m:
        raise ValueError(
            f"not a well id: {well!r} (expected a row letter and a column, e.g. 'B03')"
        )
    letters, col = m.groups()
    row = 0
    for ch in letters:
        row = row * 26 + (ord(ch) - 64)
    return row - 1, int(col) - 1


class ImageRef(BaseModel):
    """One 2-D plane of the plate: its coordinates and where its pixels are."""

    model_config = ConfigDict(frozen=True)

    well: str
    site: int = Field(ge=1)
    channel: int = Field(ge=1)
    z: int = Field(ge=1)
    timepoint: int = Field(ge=1)
    path: str = Field(description="Path of the file inside the plate's filesystem (no protocol).")


class PlateLayout(BaseModel):
    """What a handler found: the plate's dimensions, metadata and the plane index."""

    model_config = ConfigDict(frozen=True)

    plate_id: str = Field(description="A stable name for the plate (folder name, or plate_<id>).")
    format: PlateFormat
    url: str = Field(description="The plate's root URL as the user gave it (fsspec URL).")
    wells: tuple[str, ...] = Field(description="Canonical well ids, sorted by (row, column).")
    sites: tuple[int, ...]
    channels: tuple[int, ...]
    z_planes: tuple[int, ...]
    timepoints: tuple[int, ...]
    grid: tuple[int, int] | None = Field(
        default=None, description="(rows, columns) of the site grid within a well."
    )
    tile_overlap: float | None = Field(
        default=None, description="Fractional overlap between neighbouring sites (0..1)."
    )
    pixel_size_um: float | None = None
    channel_names: dict[int, str] = Field(default_factory=dict)
    image_shape: tuple[int, int] = Field(description="(y, x) size of one plane.")
    dtype: str = Field(description="numpy dtype name of the planes, e.g. 'uint16'.")
    images: tuple[ImageRef, ...] = Field(description="Every plane found, in a stable order.")
    warnings: tuple[str, ...] = Field(
        default=(), description="Problems that do not stop a run (e.g. an HTD count mismatch)."
    )

    def images_for_well(self, well: str) -> tuple[ImageRef, ...]:
        return tuple(ref for ref in self.images if ref.well == well)

    @property
    def rows(self) -> tuple[str, ...]:
        """Row names that hold at least one well, in order."""
        seen = sorted({split_well(w)[0] for w in self.wells})
        return tuple(well_id(r, 0)[:-2] for r in seen)
