"""The plate layout: what a microscope handler discovers about a plate, before any pixel is read.

Every handler (ImageXpress, Opera Phenix, OMERO) produces the same `PlateLayout`, so the compiler
never needs to know which microscope made the plate. Wells are always named in the canonical
``A01`` form (row letter(s) + two-digit column); sites are numbered 1.. in row-major raster order
of the acquisition grid (site 1 is the top-left tile), whatever order the microscope used.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_hcs.errors import UserFacingError
from prefect_hcs.formats.compact import share_fields_sets
from prefect_hcs.formats.wells import WellId, row_name, split_well

__all__ = [
    "ChannelInfo",
    "ImageRef",
    "PlateError",
    "PlateFormat",
    "PlateLayout",
    "PlaneKey",
    "ImageAxes",
    "image_axes",
]

PlateFormat = Literal["imagexpress", "phenix", "cellvoyager", "omero"]


class PlateError(UserFacingError, ValueError):
    """A plate cannot be used as given. The message names the plate, the file and the fix."""


class ImageRef(BaseModel):
    """One 2-D image of the plate: its coordinates, where its pixels are, and where it was taken.

    A z-plane has ``z >= 1`` and ``projection is None``. A projection the instrument computed
    (MetaXpress writes them beside or instead of the stack) is not a z-plane: it has
    ``projection`` set (e.g. ``"maximum"``), and lives in `PlateLayout.projections`, never in
    `PlateLayout.images`; its ``z`` is 1 and means nothing.
    """

    model_config = ConfigDict(frozen=True)

    well: str
    site: int = Field(ge=1)
    channel: int = Field(ge=1)
    z: int = Field(ge=1)
    timepoint: int = Field(ge=1)
    path: str = Field(description="Path of the file inside the plate's filesystem (no protocol).")
    projection: str | None = Field(
        default=None, description="Projection method if this image is a projection, else None."
    )
    stage_x_um: float | None = Field(default=None, description="Stage X of the image (µm).")
    stage_y_um: float | None = Field(default=None, description="Stage Y of the image (µm).")
    z_um: float | None = Field(default=None, description="Focus position of the plane (µm).")
    acquired_at: datetime | None = Field(default=None, description="When the plane was taken.")


class PlaneKey(BaseModel):
    """The coordinates of one plane, without a file: used for planes that are absent."""

    model_config = ConfigDict(frozen=True)

    well: str
    site: int = Field(ge=1)
    channel: int = Field(ge=1)
    z: int = Field(ge=1)
    timepoint: int = Field(ge=1)


class ChannelInfo(BaseModel):
    """What the instrument says about one channel."""

    model_config = ConfigDict(frozen=True)

    name: str
    excitation_nm: float | None = None
    emission_nm: float | None = None


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
    # Physical and acquisition metadata (None/empty when the files do not say).
    variant: str | None = Field(
        default=None, description="Vendor layout variant, e.g. 'MetaXpress export', 'Harmony V7'."
    )
    plate_barcode: str | None = Field(default=None, description="The instrument's plate id.")
    z_spacing_um: float | None = Field(default=None, description="Distance between z-planes.")
    time_interval_s: float | None = Field(default=None, description="Time between timepoints.")
    objective: str | None = Field(default=None, description="Objective, e.g. '20x / 0.75 NA'.")
    channel_info: dict[int, ChannelInfo] = Field(default_factory=dict)
    projections: tuple[ImageRef, ...] = Field(
        default=(), description="Instrument-computed projections (not z-planes)."
    )
    absent: tuple[PlaneKey, ...] = Field(
        default=(), description="Planes of the (well, site, channel, z, t) grid not acquired."
    )
    padded: tuple[str, ...] = Field(
        default=(),
        description="Paths of planes an export padded with byte-identical copies of others.",
    )

    @model_validator(mode="after")
    def _compact_planes(self) -> PlateLayout:
        """One fields set for all planes with the same one (`share_fields_sets`): a plate's
        plane index is most of a layout's memory (384 wells × 24 planes: 18 → 6.6 MB)."""
        share_fields_sets((*self.images, *self.projections, *self.absent))
        return self

    def images_for_well(self, well: str) -> tuple[ImageRef, ...]:
        """The z-planes of one well (projections excluded)."""
        return tuple(ref for ref in self.images if ref.well == well)

    def field_position_um(self, well: str, site: int) -> tuple[float, float] | None:
        """Stage (x, y) in µm of a well's site, from its first plane; None if not recorded."""
        for ref in (*self.images, *self.projections):
            if ref.well == well and ref.site == site and ref.stage_x_um is not None:
                return (ref.stage_x_um, ref.stage_y_um or 0.0)
        return None

    @property
    def rows(self) -> tuple[str, ...]:
        """Row names that hold at least one well, in order."""
        seen = sorted({WellId.parse(w).row_index for w in self.wells})
        return tuple(row_name(r) for r in seen)


class ImageAxes(TypedDict):
    """The five axes of a `PlateLayout`, as `image_axes` derives them from its planes."""

    wells: tuple[str, ...]
    sites: tuple[int, ...]
    channels: tuple[int, ...]
    z_planes: tuple[int, ...]
    timepoints: tuple[int, ...]


def image_axes(images: Iterable[ImageRef]) -> ImageAxes:
    """The wells (by row, then column), sites, channels, z-planes and timepoints the planes hold,
    sorted: what a handler passes to `PlateLayout` as ``**image_axes(images)``."""
    refs = list(images)
    return ImageAxes(
        wells=tuple(sorted({r.well for r in refs}, key=split_well)),
        sites=tuple(sorted({r.site for r in refs})),
        channels=tuple(sorted({r.channel for r in refs})),
        z_planes=tuple(sorted({r.z for r in refs})),
        timepoints=tuple(sorted({r.timepoint for r in refs})),
    )
