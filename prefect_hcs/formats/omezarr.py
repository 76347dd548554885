"""OME-Zarr HCS plate writer and reader helpers (NGFF 0.5, Zarr v3), through any fsspec URL.

The write protocol follows the init → map → reduce pattern that avoids the metadata races peers hit
(iohub #141, fractal-server #362): `initialize` writes every plate/row/well group once, before the
per-well fan-out; `write_field` touches only its own field group; `finalize` checks completeness and
flips the plate status. A field's multiscales metadata is written *after* its arrays, so a field
whose writer died half-way has no metadata and reads as missing (and is rewritten on retry).

This module knows nothing of Prefect.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np
import zarr
from ome_zarr.axes import Axes
from ome_zarr.format import FormatV05
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec
from zarr.storage import FsspecStore, LocalStore

from prefect_hcs.errors import UserFacingError
from prefect_hcs.formats.physical import channel_color
from prefect_hcs.formats.wells import WellId, row_name

__all__ = [
    "NGFF_VERSION",
    "IncompleteOutputError",
    "OmeZarrPlateWriter",
    "OutputExistsError",
    "WellName",
    "field_path",
    "open_store",
    "parse_well",
    "read_plate_attrs",
    "read_well_image",
]

NGFF_VERSION = "0.5"
AXES = ("t", "c", "z", "y", "x")
_MARK = "prefect_hcs"  # our attribute namespace on the plate group: it marks the store as ours
#: Axis units written when the value is known (NGFF / UDUNITS-2 names).
SPACE_UNIT = "micrometer"
TIME_UNIT = "second"


class OutputExistsError(UserFacingError, FileExistsError):
    """The output URL holds something we must not silently reuse or delete."""


class IncompleteOutputError(RuntimeError):
    """Declared wells/fields are missing when the plate is finalized."""

    def __init__(self, message: str, missing: Sequence[tuple[str, int]] = ()) -> None:
        super().__init__(message)
        self.missing = list(missing)


# --------------------------------------------------------------------------------------------
# names and stores


class WellName(tuple):
    """(row, column) names of a well as used in the zarr path: ('B', '3') for 'B03' or 'B/3'."""

    __slots__ = ()

    def __new__(cls, row: str, column: str) -> WellName:
        """Build from the two path parts; use `parse_well` to read a user's well name."""
        return super().__new__(cls, (row, column))

    @property
    def row(self) -> str:
        """Row name as in the zarr path ('B')."""
        return self[0]

    @property
    def column(self) -> str:
        """Column name as in the zarr path, unpadded ('3')."""
        return self[1]

    @property
    def path(self) -> str:
        """The well's group path inside the plate ('B/3')."""
        return f"{self[0]}/{self[1]}"

    @property
    def row_index(self) -> int:
        """0-based physical row (A=0, Z=25, AA=26)."""
        n = 0
        for ch in self[0]:
            n = n * 26 + (ord(ch) - 64)
        return n - 1

    @property
    def column_index(self) -> int:
        """0-based physical column (column '1' = 0)."""
        return int(self[1]) - 1


def parse_well(well: str) -> WellName:
    """Accept any form `WellId.parse` reads ('B03', 'b3', 'B/3') and return the path parts ('B', '3').

    The flow speaks canonical 'B03'; the NGFF paths use unpadded column names ('B/3').
    """
    w = WellId.parse(well)
    return WellName(w.row_letter, str(w.column))


def field_path(well: str, field: int) -> str:
    """Path of a field group inside the plate store: 'B/3/0'."""
    return f"{parse_well(well).path}/{int(field)}"


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return os.path.abspath(url.removeprefix("file://"))


def open_store(
    url: str, storage_options: dict | None = None, *, read_only: bool = False
) -> LocalStore | FsspecStore:
    """A zarr v3 store for a URL: LocalStore for local paths, else FsspecStore (any fsspec URL)."""
    if _is_local(url):
        return LocalStore(_local_path(url), read_only=read_only)
    return FsspecStore.from_url(url, storage_options=storage_options or {}, read_only=read_only)


def _sync_fs(url: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    """A plain (sync) fsspec filesystem for existence checks and deletion outside zarr."""
    if _is_local(url):
        return fsspec.filesystem("file"), _local_path(url)
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def _join(url: str, path: str) -> str:
    return f"{url.rstrip('/')}/{path}"


def _read_group_attrs(store: Any, path: str = "") -> dict | None:
    """Attributes of a zarr v3 group at `path`, or None if there is no group there."""
    try:
        group = zarr.open_group(store=store, path=path, mode="r", zarr_format=3)
    except (FileNotFoundError, ValueError, KeyError):  # zarr's not-found/contains errors included
        return None
    return group.attrs.asdict()


def read_plate_attrs(url: str, storage_options: dict | None = None) -> dict | None:
    """The plate group's attributes (with 'ome' and 'prefect_hcs'), or None if there is none."""
    return _read_group_attrs(open_store(url, storage_options, read_only=True))


# --------------------------------------------------------------------------------------------
# pixels


def downsample2(data: np.ndarray) -> np.ndarray:
    """Mean of 2x2 blocks over the last two axes, same dtype.

    Odd sizes are padded by repeating the edge so that the last row/column averages real pixels
    (zero padding would darken the border); the output size is ceil(n / 2).
    """
    y, x = data.shape[-2:]
    pad = [(0, 0)] * (data.ndim - 2) + [(0, y % 2), (0, x % 2)]
    if y % 2 or x % 2:
        data = np.pad(data, pad, mode="edge")
    y2, x2 = data.shape[-2] // 2, data.shape[-1] // 2
    blocks = data.reshape(*data.shape[:-2], y2, 2, x2, 2)
    acc = np.float32 if data.dtype.itemsize <= 2 and data.dtype.kind in "biu" else np.float64
    mean = blocks.mean(axis=(-3, -1), dtype=acc)
    if np.issubdtype(data.dtype, np.integer):
        mean = np.rint(mean)
    elif data.dtype == bool:
        mean = mean >= 0.5
    return mean.astype(data.dtype, copy=False)


def pyramid_shapes(
    shape: Sequence[int], n_levels: int | None = None, min_side: int = 256
) -> list[tuple[int, ...]]:
    """Level shapes: halve y,x until the smaller side is <= min_side, or exactly n_levels levels."""
    shapes = [tuple(int(s) for s in shape)]
    while True:
        y, x = shapes[-1][-2:]
        if n_levels is not None:
            if len(shapes) >= n_levels or min(y, x) <= 1:
                break
        elif min(y, x) <= min_side:
            break
        shapes.append((*shapes[-1][:-2], math.ceil(y / 2), math.ceil(x / 2)))
    return shapes


def _dtype_range(dtype: np.dtype) -> tuple[float, float]:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0  # bool and float: widened to the data range by the caller


def _omero(
    data: np.ndarray, channel_names: Sequence[str], colors: Sequence[str] | None = None
) -> dict:
    lo_all, hi_all = _dtype_range(data.dtype)
    channels = []
    for i, name in enumerate(channel_names):
        plane = data[:, i]
        lo, hi = (float(plane.min()), float(plane.max())) if plane.size else (lo_all, hi_all)
        if not np.issubdtype(data.dtype, np.integer):
            lo_all, hi_all = min(lo_all, lo), max(hi_all, hi)
        channels.append(
            {
                "label": str(name),
                "color": colors[i] if colors else channel_color(str(name), None, i),
                "window": {"start": lo, "end": hi, "min": lo_all, "max": hi_all},
                "active": True,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
            }
        )
    return {
        "channels": channels,
        "rdefs": {"model": "color", "defaultT": 0, "defaultZ": int(data.shape[2] // 2)},
    }


def _axes(
    pixel_size_um: float | None, z_step_um: float | None, time_interval_s: float | None = None
) -> list[dict]:
    """NGFF axes (through ome-zarr-py's validating `Axes`), with a unit only where it is known."""
    units = {"t": TIME_UNIT} if time_interval_s is not None else {}
    if z_step_um is not None:
        units["z"] = SPACE_UNIT
    if pixel_size_um is not None:
        units.update(y=SPACE_UNIT, x=SPACE_UNIT)
    return Axes(list(AXES), axes_units=units, fmt=FormatV05()).to_list()


def _transforms(
    level: int,
    pixel_size_um: float | None,
    z_step_um: float | None,
    time_interval_s: float | None,
    translation_um: tuple[float, float] | None,
) -> list[dict]:
    """Scale and translation of one pyramid level, in the axes' units (pixels when unknown).

    ``translation_um`` (y, x) places the field where the microscope took it; a 2x2 mean also puts
    the pixel centre half a (coarse) pixel in.
    """
    px = 1.0 if pixel_size_um is None else float(pixel_size_um)
    pz = 1.0 if z_step_um is None else float(z_step_um)
    dt = 1.0 if time_interval_s is None else float(time_interval_s)
    f = 2**level
    ty, tx = translation_um if translation_um is not None else (0.0, 0.0)
    half = px * (f - 1) / 2
    return [
        {"type": "scale", "scale": [dt, 1.0, pz, px * f, px * f]},
        {"type": "translation", "translation": [0.0, 0.0, 0.0, ty + half, tx + half]},
    ]


def _compressors(compressor: str, level: int) -> list:
    if compressor == "zstd":
        return [ZstdCodec(level=level)]
    if compressor == "blosc":
        return [BloscCodec(cname="zstd", clevel=level, shuffle=BloscShuffle.bitshuffle)]
    if compressor in ("none", ""):
        return []
    raise ValueError(f"unknown compressor {compressor!r}: use 'zstd', 'blosc' or 'none'")


# --------------------------------------------------------------------------------------------
# writer


class OmeZarrPlateWriter:
    """Writes one NGFF 0.5 HCS plate: `initialize` once, `write_field` per field (in parallel),
    `finalize` once.

    The object holds only the URL and storage options, so it pickles to worker processes; each
    process opens its own store lazily.
    """

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = url.rstrip("/") if "://" in url else url
        self.storage_options = dict(storage_options or {})
        self._store: LocalStore | FsspecStore | None = None
        self._declared: dict[str, int] | None = None  # well path -> number of fields

    def __repr__(self) -> str:
        return f"OmeZarrPlateWriter({self.url!r})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_store"] = None
        state["_declared"] = None
        return state

    @property
    def store(self) -> LocalStore | FsspecStore:
        """The zarr store, opened on first use (a pickled writer reopens it in its process)."""
        if self._store is None:
            self._store = open_store(self.url, self.storage_options)
        return self._store

    # -- initialize ----------------------------------------------------------------------------

    def initialize(
        self,
        *,
        plate_name: str,
        wells: Sequence[str],
        fields_per_well: int,
        channel_names: Sequence[str],
        pixel_size_um: float | None,
        source_fingerprint: str,
        overwrite: bool = False,
        plate_shape: tuple[int, int] | None = None,
    ) -> None:
        """Write the plate, row and well groups before the fan-out (never concurrently).

        `plate_shape` (n_rows, n_columns), when the plate format is known, makes rows/columns
        list the whole physical plate from 'A'/'1'; otherwise they cover min..max of the used
        wells, as the writer cannot know the plate format.
        """
        if not wells:
            raise ValueError("initialize needs at least one well")
        if fields_per_well < 1:
            raise ValueError(f"fields_per_well must be >= 1, got {fields_per_well}")
        names = sorted({parse_well(w) for w in wells}, key=lambda w: (w.row_index, w.column_index))
        if len(names) != len(wells):
            raise ValueError(f"duplicate wells in {list(wells)}")
        layout = {
            "plate_name": plate_name,
            "wells": [w.path for w in names],
            "fields_per_well": int(fields_per_well),
            "channel_names": [str(c) for c in channel_names],
            "pixel_size_um": pixel_size_um,
        }

        existing = self._inspect_existing()
        if existing is not None:
            old = existing.get(_MARK, {})
            same = old.get("source_fingerprint") == source_fingerprint
            if same and not overwrite:
                old_layout = old.get("layout")
                if old_layout is not None and old_layout != layout:
                    raise OutputExistsError(
                        f"{self.url} already holds plate {old_layout.get('plate_name')!r} from the "
                        f"same source ({source_fingerprint}) but with a different layout "
                        f"(wells/fields/channels: {self._layout_diff(old_layout, layout)}). "
                        "Pass overwrite=True (CLI: --overwrite) to replace it, or write elsewhere."
                    )
                if old.get("status") in ("initialized", "complete") and self._groups_present(names):
                    return  # idempotent re-run / resume: nothing to write
            elif not overwrite:
                old_name = (existing.get("ome", {}).get("plate") or {}).get("name") or old.get(
                    "layout", {}
                ).get("plate_name")
                raise OutputExistsError(
                    f"{self.url} already holds plate {old_name!r} (source fingerprint "
                    f"{old.get('source_fingerprint')}), which is not the plate being written now "
                    f"({plate_name!r}, source fingerprint {source_fingerprint}). Pass "
                    "overwrite=True (CLI: --overwrite) to replace it, or choose another output URL."
                )
            if overwrite:
                fs, path = _sync_fs(self.url, self.storage_options)
                fs.rm(path, recursive=True)
                self._store = None
        self._declared = None

        self._write_layout(
            names, layout, source_fingerprint, plate_name, fields_per_well, plate_shape
        )

    @staticmethod
    def _layout_diff(old: dict, new: dict) -> str:
        keys = [k for k in new if old.get(k) != new.get(k)]
        return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)

    def _inspect_existing(self) -> dict | None:
        """Root attributes if the URL holds our plate; None if nothing (or an empty dir) is there.

        Raises OutputExistsError for anything else: user data that is not ours is never touched,
        whatever `overwrite` says.
        """
        fs, path = _sync_fs(self.url, self.storage_options)
        if not fs.exists(path):
            return None
        if not fs.isdir(path):
            raise OutputExistsError(
                f"{self.url} exists and is a file, not a prefect-hcs OME-Zarr plate; refusing to "
                "write there (even with overwrite=True). Choose another output URL."
            )
        attrs = _read_group_attrs(self.store)
        if attrs is not None and isinstance(attrs.get(_MARK), dict):
            return attrs
        if attrs is None and not fs.ls(path, detail=False):
            return None  # an empty directory made for us: fine to write into
        what = (
            "a zarr group not written by prefect-hcs" if attrs is not None else "not a zarr group"
        )
        raise OutputExistsError(
            f"{self.url} exists and is {what}; refusing to write there or delete it (even with "
            "overwrite=True, only plates written by prefect-hcs are replaced). Choose another "
            "output URL or remove it yourself."
        )

    def _groups_present(self, names: Sequence[WellName]) -> bool:
        return all(
            (_read_group_attrs(self.store, w.path) or {}).get("ome", {}).get("well") for w in names
        )

    def _write_layout(
        self,
        names: Sequence[WellName],
        layout: dict,
        fingerprint: str,
        plate_name: str,
        fields_per_well: int,
        plate_shape: tuple[int, int] | None,
    ) -> None:
        mark = {"source_fingerprint": fingerprint, "status": "initializing", "layout": layout}
        root = zarr.open_group(store=self.store, mode="a", zarr_format=3)
        root.attrs.put({_MARK: mark})  # marks the store as ours before anything else is written

        if plate_shape is not None:
            n_rows, n_cols = plate_shape
            if any(w.row_index >= n_rows or w.column_index >= n_cols for w in names):
                raise ValueError(f"wells {layout['wells']} do not fit a {n_rows}x{n_cols} plate")
            row0, col0 = 0, 0
        else:
            row0 = min(w.row_index for w in names)
            col0 = min(w.column_index for w in names)
            n_rows = max(w.row_index for w in names) + 1
            n_cols = max(w.column_index for w in names) + 1
        rows = [row_name(i) for i in range(row0, n_rows)]
        columns = [str(i + 1) for i in range(col0, n_cols)]

        images = [{"path": str(f), "acquisition": 0} for f in range(fields_per_well)]
        for row in sorted({w.row for w in names}):
            root.require_group(row)
        for w in names:
            well_group = root.require_group(w.path)
            well_group.attrs.put({"ome": {"version": NGFF_VERSION, "well": {"images": images}}})

        plate = {
            "version": NGFF_VERSION,  # ome-zarr-models warns without it (ome-zarr-models #218)
            "name": plate_name,
            "rows": [{"name": r} for r in rows],
            "columns": [{"name": c} for c in columns],
            "wells": [
                {
                    "path": w.path,
                    "rowIndex": rows.index(w.row),
                    "columnIndex": columns.index(w.column),
                }
                for w in names
            ],
            "field_count": int(fields_per_well),
            "acquisitions": [
                {"id": 0, "name": plate_name, "maximumfieldcount": int(fields_per_well)}
            ],
        }
        root.attrs.put(
            {
                "ome": {"version": NGFF_VERSION, "plate": plate},
                _MARK: {**mark, "status": "initialized"},
            }
        )

    # -- fields --------------------------------------------------------------------------------

    def write_field(
        self,
        well: str,
        field: int,
        data: np.ndarray,
        *,
        channel_names: Sequence[str],
        pixel_size_um: float | None,
        n_levels: int | None = None,
        chunk_yx: int = 512,
        compressor: str = "zstd",
        level: int = 3,
        z_step_um: float | None = None,
        time_interval_s: float | None = None,
        translation_um: tuple[float, float] | None = None,
        channel_colors: Sequence[str] | None = None,
        absent_planes: Sequence[dict[str, int]] = (),
    ) -> str:
        """Write one field image (t, c, z, y, x) with its pyramid; return the field group's URL.

        Physical metadata: ``pixel_size_um``, ``z_step_um`` (µm) and ``time_interval_s`` become
        the scale of y/x, z and t with their units (an unknown value gets scale 1 and no unit);
        ``translation_um`` (y, x) is the field's offset from its stage position. Channel
        ``channel_colors`` (RRGGBB) go into the omero rendering metadata, and ``absent_planes``
        (source planes the instrument did not acquire, zero-filled) into the field's
        ``prefect_hcs`` attributes.

        Only '<row>/<col>/<field>' is touched (any previous content there is replaced), so
        different wells can be written concurrently from threads or processes. Arrays first,
        multiscales metadata last: a field without metadata is a field that does not exist.
        """
        data = np.asarray(data)
        if data.ndim != 5:
            raise ValueError(f"field data must be 5-D (t, c, z, y, x), got shape {data.shape}")
        if len(channel_names) != data.shape[1]:
            raise ValueError(
                f"{len(channel_names)} channel names for {data.shape[1]} channels in {well}/{field}"
            )
        if n_levels is not None and n_levels < 1:
            raise ValueError(f"n_levels must be >= 1, got {n_levels}")
        path = field_path(well, field)
        self._check_declared(well, field)
        compressors = _compressors(compressor, level)

        group = zarr.open_group(store=self.store, path=path, mode="w", zarr_format=3)
        if channel_colors is not None and len(channel_colors) != data.shape[1]:
            raise ValueError(
                f"{len(channel_colors)} colours for {data.shape[1]} channels in {well}/{field}"
            )
        shapes = pyramid_shapes(data.shape, n_levels)
        datasets = []
        level_data = data
        for i, shape in enumerate(shapes):
            if i:
                level_data = downsample2(level_data)
            assert level_data.shape == shape
            chunks = (1, 1, 1, min(chunk_yx, shape[3]), min(chunk_yx, shape[4]))
            arr = group.create_array(
                name=str(i),
                shape=shape,
                dtype=data.dtype,
                chunks=chunks,
                compressors=compressors,
                dimension_names=AXES,
                fill_value=0,
                config={"write_empty_chunks": True},  # so field_complete can count chunks
            )
            arr[...] = level_data
            transforms = _transforms(i, pixel_size_um, z_step_um, time_interval_s, translation_um)
            datasets.append({"path": str(i), "coordinateTransformations": transforms})
        FormatV05().validate_coordinate_transformations(
            len(AXES), len(datasets), [d["coordinateTransformations"] for d in datasets]
        )
        multiscale = {
            "name": path,
            "axes": _axes(pixel_size_um, z_step_um, time_interval_s),
            "datasets": datasets,
            "type": "mean",
            "metadata": {"method": "2x2 block mean, edge-padded for odd sizes"},
        }
        attrs: dict[str, Any] = {
            "ome": {
                "version": NGFF_VERSION,
                "multiscales": [multiscale],
                "omero": _omero(data, channel_names, channel_colors),
            }
        }
        if absent_planes:
            attrs[_MARK] = {"absent_planes": [dict(p) for p in absent_planes]}
        group.attrs.put(attrs)
        return _join(self.url, path)

    def _check_declared(self, well: str, field: int) -> None:
        """Refuse fields initialize did not declare: they would sit outside the plate metadata."""
        if self._declared is None:
            attrs = _read_group_attrs(self.store) or {}
            mark = attrs.get(_MARK) or {}
            layout = mark.get("layout") or {}
            if "plate" not in (attrs.get("ome") or {}) or not layout:
                raise RuntimeError(f"{self.url} is not initialized: call initialize() first")
            self._declared = {w: int(layout["fields_per_well"]) for w in layout["wells"]}
        wpath = parse_well(well).path
        if wpath not in self._declared:
            raise ValueError(f"well {well} was not declared by initialize() for {self.url}")
        if not 0 <= int(field) < self._declared[wpath]:
            raise ValueError(
                f"field {field} of well {well} is outside 0..{self._declared[wpath] - 1} "
                f"declared by initialize() for {self.url}"
            )

    def field_complete(self, well: str, field: int, *, check_chunks: bool = False) -> bool:
        """True if the field's metadata is present and every level array matches it.

        Level shapes must follow the pyramid of level 0. With check_chunks, every chunk object
        must also exist (one listing per level: cheap locally, slower on object stores).
        """
        path = field_path(well, field)
        try:
            group = zarr.open_group(store=self.store, path=path, mode="r", zarr_format=3)
            ome = group.attrs.asdict().get("ome", {})
            datasets = ome["multiscales"][0]["datasets"]
            arrays = [group[d["path"]] for d in datasets]
        except (FileNotFoundError, KeyError, IndexError, TypeError, ValueError):
            return False
        if not arrays or not all(isinstance(a, zarr.Array) for a in arrays):
            return False
        expected = pyramid_shapes(arrays[0].shape, n_levels=len(arrays))
        if [tuple(a.shape) for a in arrays] != expected:
            return False
        return not check_chunks or all(a.nchunks_initialized == a.nchunks for a in arrays)

    # -- finalize ------------------------------------------------------------------------------

    def declared_fields(self) -> list[tuple[str, int]]:
        """(well path, field) pairs declared by initialize, read from the store (any process)."""
        attrs = _read_group_attrs(self.store)
        if attrs is None or "plate" not in attrs.get("ome", {}):
            raise IncompleteOutputError(f"{self.url} has no plate metadata: was initialize run?")
        out = []
        for w in attrs["ome"]["plate"]["wells"]:
            well_attrs = _read_group_attrs(self.store, w["path"]) or {}
            images = well_attrs.get("ome", {}).get("well", {}).get("images")
            if images is None:
                images = [{"path": "0"}]  # a missing well group counts as missing field 0
            out.extend((w["path"], int(im["path"])) for im in images)
        return out

    def missing_fields(self) -> list[tuple[str, int]]:
        """Declared (well, field) pairs that are not complete."""
        return [(w, f) for w, f in self.declared_fields() if not self.field_complete(w, f)]

    def finalize(self, *, summary: dict | None = None) -> None:
        """Mark the plate complete, or raise IncompleteOutputError naming what is missing."""
        missing = self.missing_fields()
        root = zarr.open_group(store=self.store, mode="r+", zarr_format=3)
        mark = dict(root.attrs.asdict().get(_MARK, {}))
        if missing:
            mark["status"] = "incomplete"
            mark["missing"] = [f"{w}/{f}" for w, f in missing]
            root.attrs.update({_MARK: mark})
            listed = ", ".join(f"well {w.replace('/', '')} field {f}" for w, f in missing[:20])
            more = f" (and {len(missing) - 20} more)" if len(missing) > 20 else ""
            raise IncompleteOutputError(
                f"{self.url}: {len(missing)} declared field(s) missing or half-written: "
                f"{listed}{more}. Re-run those wells; complete fields are kept.",
                missing,
            )
        mark.pop("missing", None)
        mark["status"] = "complete"
        if summary is not None:
            mark["summary"] = summary
        root.attrs.update({_MARK: mark})


# --------------------------------------------------------------------------------------------
# reading


def read_well_image(
    url: str,
    well: str,
    field: int = 0,
    level: int = 0,
    storage_options: dict | None = None,
) -> np.ndarray:
    """Read one field at one pyramid level as a 5-D (t, c, z, y, x) array.

    The level's array path comes from the multiscales metadata, never assumed.
    """
    store = open_store(url, storage_options, read_only=True)
    path = field_path(well, field)
    try:
        group = zarr.open_group(store=store, path=path, mode="r", zarr_format=3)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no field group {path} in {url}") from exc
    try:
        datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    except (KeyError, IndexError) as exc:
        raise FileNotFoundError(
            f"field {path} in {url} has no multiscales metadata (missing or half-written)"
        ) from exc
    if not -len(datasets) <= level < len(datasets):
        raise IndexError(f"level {level} out of range: {path} has {len(datasets)} levels")
    return np.asarray(group[datasets[level]["path"]][...])
