"""Where an OME-Zarr plate lives: well and field paths inside it, and the store to open.

Names: the flow speaks canonical well names ('B03'); NGFF paths use the row letters and the
unpadded column ('B/3'), fields are numbered groups below ('B/3/0'). Stores: a local path opens as
zarr's `LocalStore`, any other fsspec URL as an `FsspecStore` with the run's storage options.
Everything that reads or writes a plate (writer, reader, validator, cleanup) names paths and opens
stores here, so there is one spelling of each.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
import zarr
from zarr.storage import FsspecStore, LocalStore

from prefect_hcs.formats.wells import WellId

__all__ = [
    "AXES",
    "MARK",
    "NGFF_VERSION",
    "WellName",
    "field_path",
    "is_local",
    "local_path",
    "open_store",
    "parse_well",
    "read_group_attrs",
    "read_plate_attrs",
    "sync_fs",
]

NGFF_VERSION = "0.5"
AXES = ("t", "c", "z", "y", "x")
#: Our attribute namespace on the plate group: it marks the store as written by prefect-hcs.
MARK = "prefect_hcs"


class WellName(tuple):
    """(row, column) names of a well as used in the zarr path: ('B', '3') for 'B03' or 'B/3'."""

    __slots__ = ()

    def __new__(cls, row: str, column: str) -> WellName:
        """The path parts of a well: its row letters and unpadded column number."""
        return super().__new__(cls, (row, column))

    @property
    def row(self) -> str:
        """Row letters, the first path part ('B')."""
        return self[0]

    @property
    def column(self) -> str:
        """Unpadded column number, the second path part ('3')."""
        return self[1]

    @property
    def path(self) -> str:
        """The well group's path inside the plate ('B/3')."""
        return f"{self[0]}/{self[1]}"

    @property
    def row_index(self) -> int:
        """0-based physical row (A=0, Z=25, AA=26)."""
        return WellId.parse(self.path).row_index

    @property
    def column_index(self) -> int:
        """0-based physical column (column '1' = 0)."""
        return int(self[1]) - 1


def parse_well(well: str) -> WellName:
    """Accept any form `WellId.parse` reads ('B03', 'b3', 'B/3') and return the path parts ('B', '3').

    The flow speaks canonical 'B03'; the NGFF paths use unpadded column names ('B/3').

    Raises:
        WellIdError: `well` is not a well name (a `ValueError`).
    """
    w = WellId.parse(well)
    return WellName(w.row_letter, str(w.column))


def field_path(well: str, field: int) -> str:
    """Path of a field group inside the plate store: 'B/3/0'."""
    return f"{parse_well(well).path}/{int(field)}"


def is_local(url: str) -> bool:
    """True for a plain path or a ``file://`` URL (opened as a zarr `LocalStore`)."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    """The absolute filesystem path of a local URL (see `is_local`)."""
    return os.path.abspath(url.removeprefix("file://"))


def open_store(
    url: str, storage_options: dict | None = None, *, read_only: bool = False
) -> LocalStore | FsspecStore:
    """A zarr v3 store for a URL: LocalStore for local paths, else FsspecStore (any fsspec URL)."""
    if is_local(url):
        return LocalStore(local_path(url), read_only=read_only)
    return FsspecStore.from_url(url, storage_options=storage_options or {}, read_only=read_only)


def sync_fs(url: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    """A plain (sync) fsspec filesystem and path, for existence checks and deletion outside zarr."""
    if is_local(url):
        return fsspec.filesystem("file"), local_path(url)
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def read_group_attrs(store: Any, path: str = "") -> dict[str, Any] | None:
    """Attributes of a zarr v3 group at `path`, or None if there is no group there."""
    try:
        group = zarr.open_group(store=store, path=path, mode="r", zarr_format=3)
    except (FileNotFoundError, ValueError, KeyError):  # zarr's not-found/contains errors included
        return None
    attrs: dict[str, Any] = group.attrs.asdict()
    return attrs


def read_plate_attrs(url: str, storage_options: dict | None = None) -> dict[str, Any] | None:
    """The plate group's attributes (with 'ome' and 'prefect_hcs'), or None if there is none."""
    return read_group_attrs(open_store(url, storage_options, read_only=True))
