"""The narrow OMERO gateway adapter: the only way prefect-hcs talks to OMERO.

`OmeroAdapter` is the protocol the ``omero`` filesystem and the plate handler use, and the plain
data it returns (no omero-py object leaks out). Two implementations exist: `BlitzGatewayAdapter`
over omero-py's ``BlitzGateway`` (`prefect_hcs.storage.omero_blitz`; omero-py is imported lazily,
so the rest of prefect-hcs works without it) and the SQLite-backed stand-in in
`prefect_hcs.testing.omero_standin` used by tests and demos.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from prefect_hcs.storage.omero_errors import (
    OmeroAuthError,
    OmeroConnectionError,
    OmeroError,
    OmeroNotFound,
    OmeroPermissionDenied,
)

__all__ = [
    "ObjectType",
    "AnnotationTarget",
    "FileAnnotationInfo",
    "ImageInfo",
    "OmeroAdapter",
    "OmeroAuthError",
    "OmeroConnectionError",
    "OmeroError",
    "OmeroNotFound",
    "OmeroPermissionDenied",
    "PlateInfo",
    "WellInfo",
]

ObjectType = Literal["Plate", "Well", "Image"]
AnnotationTarget = tuple[ObjectType, int]


# --------------------------------------------------------------------------------------------
# Plain data returned by every adapter (no omero-py objects leak out)


@dataclass(frozen=True)
class ImageInfo:
    """One Image and its primary Pixels (sizes as in OMERO; planes addressed 0-based)."""

    image_id: int
    name: str
    size_z: int
    size_c: int
    size_t: int
    size_y: int
    size_x: int
    dtype: str
    channel_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class WellInfo:
    """A Well at 0-based (row, column); `images[i]` is the Image of WellSample i (site i + 1)."""

    well_id: int
    row: int
    column: int
    images: tuple[ImageInfo, ...]


@dataclass(frozen=True)
class PlateInfo:
    """A Plate and its Wells, as one adapter call returns them (a plate's tree does not change)."""

    plate_id: int
    name: str
    wells: tuple[WellInfo, ...]


@dataclass(frozen=True)
class FileAnnotationInfo:
    """A FileAnnotation; `path`/`name` are its OriginalFile's path and name."""

    annotation_id: int
    ns: str | None
    path: str
    name: str
    size: int
    mimetype: str | None = None


@runtime_checkable
class OmeroAdapter(Protocol):
    """What prefect-hcs needs from OMERO, and nothing more.

    Errors: OmeroNotFound, OmeroPermissionDenied, OmeroAuthError, OmeroConnectionError
    (transient: the caller may retry).
    """

    @property
    def user(self) -> str:
        """The OMERO user name this adapter logs in as (for messages)."""
        ...

    def connect(self) -> None:
        """Log in now (otherwise the first call does): OmeroAuthError on bad credentials."""
        ...

    def get_plate(self, plate_id: int) -> PlateInfo:
        """The plate's tree: wells (0-based row/column) and one image per well sample."""
        ...

    def read_plane(self, image_id: int, z: int, c: int, t: int) -> np.ndarray:
        """One 2-D plane; z, c, t are 0-based as in OMERO."""
        ...

    def upload_file_annotation(
        self, target: AnnotationTarget, data: bytes, path: str, name: str, ns: str, mimetype: str
    ) -> int:
        """Create an unlinked FileAnnotation in the target's group; return its id."""
        ...

    def link_annotation(self, target: AnnotationTarget, annotation_id: int) -> None:
        """Link an uploaded annotation to the target (only then is it visible on the object)."""
        ...

    def list_file_annotations(
        self, target: AnnotationTarget, ns: str | None = None
    ) -> list[FileAnnotationInfo]:
        """The target's FileAnnotations, only those of namespace `ns` when given."""
        ...

    def download_file_annotation(self, annotation_id: int) -> bytes:
        """The whole content of a FileAnnotation's file."""
        ...

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete an annotation (and with it its links)."""
        ...

    def get_map_annotation(self, target: AnnotationTarget, ns: str) -> dict[str, str] | None:
        """The target's MapAnnotation of namespace `ns` as a dict, or None when it has none."""
        ...

    def set_map_annotation(
        self, target: AnnotationTarget, ns: str, values: Mapping[str, str]
    ) -> int:
        """Attach a new MapAnnotation, then delete older ones of the same namespace."""
        ...

    def close(self) -> None:
        """Log out and free the connection (the next call logs in again)."""
        ...
