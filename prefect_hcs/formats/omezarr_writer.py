"""Write an OME-Zarr HCS plate (NGFF 0.5, Zarr v3) through any fsspec URL, safely in parallel.

The write protocol follows the init → map → reduce pattern that avoids the metadata races peers hit
(iohub #141, fractal-server #362): `initialize` writes every plate/row/well group once, before the
per-well fan-out; `write_field` touches only its own field group; `finalize` checks completeness and
flips the plate status. A field's multiscales metadata is written *after* its arrays, so a field
whose writer died half-way has no metadata and reads as missing (and is rewritten on retry).

Plate and well metadata go through ome-zarr-py's `write_plate_metadata`/`write_well_metadata`,
which check rows, columns and each well's rowIndex/columnIndex against its path; this module adds
only the order of writes (our mark first, the plate metadata, then the status flip). The plate's
rows and columns span the wells written (``B..G`` × ``2..11`` for wells B02–G11): the layout does
not say which physical plate format the instrument used, and NGFF indices are into these lists.

This module knows nothing of Prefect.

Over 400 lines because it is one writer class whose three phases (`initialize`, `write_field`,
`finalize`) share the store, the declared layout and the refusal rules; the store helpers and the
pyramid already live in `omezarr_store` and `omezarr_pyramid`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
from ome_zarr.format import FormatV05
from ome_zarr.writer import write_plate_metadata, write_well_metadata
from zarr.storage import FsspecStore, LocalStore

from prefect_hcs.errors import UserFacingError
from prefect_hcs.formats.fsio import join_url
from prefect_hcs.formats.omezarr_pyramid import (
    compressors,
    downsample2,
    image_metadata,
    level_transforms,
    pyramid_shapes,
)
from prefect_hcs.formats.omezarr_store import (
    AXES,
    MARK,
    WellName,
    field_path,
    open_store,
    parse_well,
    read_group_attrs,
    sync_fs,
)
from prefect_hcs.formats.wells import row_name

__all__ = ["IncompleteOutputError", "OmeZarrPlateWriter", "OutputExistsError"]

_FORMAT = FormatV05()


class OutputExistsError(UserFacingError, FileExistsError):
    """The output URL holds something we must not silently reuse or delete."""


class IncompleteOutputError(RuntimeError):
    """Declared wells/fields are missing when the plate is finalized."""

    def __init__(self, message: str, missing: Sequence[tuple[str, int]] = ()) -> None:
        super().__init__(message)
        self.missing = list(missing)


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
        """The zarr store, opened on first use in each process (it is not pickled)."""
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
    ) -> None:
        """Write the plate, row and well groups before the fan-out (never concurrently).

        Rows and columns cover min..max of `wells` (see the module docstring). Re-running with
        the same `source_fingerprint` and layout is a no-op; anything else already at the URL
        is refused unless it is our own plate and `overwrite` is set.

        Raises:
            OutputExistsError: the URL holds another plate, or something not ours.
            ValueError: no wells, duplicate wells or fewer than one field per well.
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
            old = existing.get(MARK, {})
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
                fs, path = sync_fs(self.url, self.storage_options)
                fs.rm(path, recursive=True)
                self._store = None
        self._declared = None

        self._write_layout(names, layout, source_fingerprint, plate_name, fields_per_well)

    @staticmethod
    def _layout_diff(old: dict, new: dict) -> str:
        keys = [k for k in new if old.get(k) != new.get(k)]
        return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)

    def _inspect_existing(self) -> dict | None:
        """Root attributes if the URL holds our plate; None if nothing (or an empty dir) is there.

        Raises OutputExistsError for anything else: user data that is not ours is never touched,
        whatever `overwrite` says.
        """
        fs, path = sync_fs(self.url, self.storage_options)
        if not fs.exists(path):
            return None
        if not fs.isdir(path):
            raise OutputExistsError(
                f"{self.url} exists and is a file, not a prefect-hcs OME-Zarr plate; refusing to "
                "write there (even with overwrite=True). Choose another output URL."
            )
        attrs = read_group_attrs(self.store)
        if attrs is not None and isinstance(attrs.get(MARK), dict):
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
            (read_group_attrs(self.store, w.path) or {}).get("ome", {}).get("well") for w in names
        )

    def _write_layout(
        self,
        names: Sequence[WellName],
        layout: dict,
        fingerprint: str,
        plate_name: str,
        fields_per_well: int,
    ) -> None:
        """Mark the store as ours, write well then plate metadata, then flip the status.

        A crash before the flip leaves status 'initializing', so the next run rewrites the layout.
        """
        mark: dict[str, Any] = {
            "source_fingerprint": fingerprint,
            "status": "initializing",
            "layout": layout,
        }
        root = zarr.open_group(store=self.store, mode="a", zarr_format=3)
        root.attrs.put({MARK: mark})  # marks the store as ours before anything else is written

        top, bottom = min(w.row_index for w in names), max(w.row_index for w in names)
        first, last = min(w.column_index for w in names), max(w.column_index for w in names)
        rows = [row_name(i) for i in range(top, bottom + 1)]
        columns = [str(i + 1) for i in range(first, last + 1)]
        images = [{"path": str(f), "acquisition": 0} for f in range(fields_per_well)]
        for row in sorted({w.row for w in names}):
            root.require_group(row)
        for w in names:
            write_well_metadata(root.require_group(w.path), images, fmt=_FORMAT)
        write_plate_metadata(
            root,
            rows,
            columns,
            [w.path for w in names],  # ome-zarr-py derives and checks rowIndex/columnIndex
            fmt=_FORMAT,
            acquisitions=[{"id": 0, "name": plate_name, "maximumfieldcount": int(fields_per_well)}],
            field_count=int(fields_per_well),
            name=plate_name,
        )
        root.attrs.update({MARK: {**mark, "status": "initialized"}})

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
        codecs = compressors(compressor, level)

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
                compressors=codecs,
                dimension_names=AXES,
                fill_value=0,
                config={"write_empty_chunks": True},  # so field_complete can count chunks
            )
            arr[...] = level_data
            transforms = level_transforms(
                i, pixel_size_um, z_step_um, time_interval_s, translation_um
            )
            datasets.append({"path": str(i), "coordinateTransformations": transforms})
        ome = image_metadata(
            path, datasets, data, channel_names, channel_colors, pixel_size_um, z_step_um,
            time_interval_s,
        )  # fmt: skip
        attrs: dict[str, Any] = {"ome": ome}
        if absent_planes:
            attrs[MARK] = {"absent_planes": [dict(p) for p in absent_planes]}
        group.attrs.put(attrs)
        return join_url(self.url, path)

    def _check_declared(self, well: str, field: int) -> None:
        """Refuse fields initialize did not declare: they would sit outside the plate metadata."""
        if self._declared is None:
            attrs = read_group_attrs(self.store) or {}
            mark = attrs.get(MARK) or {}
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
            ome: Any = group.attrs.asdict().get("ome", {})
            datasets = ome["multiscales"][0]["datasets"]
            found = [group[d["path"]] for d in datasets]
        except (FileNotFoundError, KeyError, IndexError, TypeError, ValueError):
            return False
        arrays = [a for a in found if isinstance(a, zarr.Array)]
        if not arrays or len(arrays) != len(found):
            return False
        expected = pyramid_shapes(arrays[0].shape, n_levels=len(arrays))
        if [tuple(a.shape) for a in arrays] != expected:
            return False
        return not check_chunks or all(a.nchunks_initialized == a.nchunks for a in arrays)

    # -- finalize ------------------------------------------------------------------------------

    def declared_fields(self) -> list[tuple[str, int]]:
        """(well path, field) pairs declared by initialize, read from the store (any process)."""
        attrs = read_group_attrs(self.store)
        if attrs is None or "plate" not in attrs.get("ome", {}):
            raise IncompleteOutputError(f"{self.url} has no plate metadata: was initialize run?")
        out: list[tuple[str, int]] = []
        for w in attrs["ome"]["plate"]["wells"]:
            well_attrs = read_group_attrs(self.store, w["path"]) or {}
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
        current: Any = root.attrs.asdict().get(MARK, {})
        mark = dict(current)
        if missing:
            mark["status"] = "incomplete"
            mark["missing"] = [f"{w}/{f}" for w, f in missing]
            root.attrs.update({MARK: mark})
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
        root.attrs.update({MARK: mark})
