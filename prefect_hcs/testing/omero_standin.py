"""An OMERO stand-in: OMERO's object model in a folder (SQLite + one .npy per image).

There is no OMERO server here, so tests and ``prefect-hcs demo --omero`` use this instead (the
admin side lives here; storage in `standin_db`, the user's adapter in `standin_adapter`, the
test-only hook in `standin_hook`, re-exported here). It is a
test double, outside the product: a process reaches it only after `install_standin` (tests do it
in ``tests/conftest.py`` and, for the processes they start, ``tests/standin_site``; the demo
calls it), which routes logins whose host is ``standin:<folder>`` to the stand-in in that folder. It keeps
the parts of OMERO the plugin relies on: Plate -> Well (0-based row/column) -> WellSample -> Image
-> Pixels (sizeZ/C/T/Y/X); FileAnnotation (OriginalFile path/name/size/mimetype) and MapAnnotation
with namespaces, linked to Plates, Wells and Images; groups, users and passwords (a user reads only
plates of groups they are a member of). State lives on disk so that separate processes (Prefect
workers, Dask workers) share it; every write is one SQLite transaction, so a failure leaves nothing
half-written. Faults can be injected (stored in the database, so they reach other processes too).

    server = StandinServer.create("/tmp/omero")
    server.add_user("alice", "secret", group="lab")
    plate_id = server.import_plate_from_layout(layout, group="lab")   # plate read from disk
    adapter = server.connect("alice", "secret")                        # an OmeroAdapter
    install_standin()
    fs = OmeroFileSystem(**standin_options("/tmp/omero", "alice", group="lab"))
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
from pydantic import SecretStr

from prefect_hcs.formats.layout import ImageRef, PlateLayout
from prefect_hcs.formats.wells import split_well
from prefect_hcs.storage.omero_paths import PLATE_NS
from prefect_hcs.testing.standin_adapter import StandinAdapter
from prefect_hcs.testing.standin_db import (
    DB_NAME,
    FAULT_OPS,
    SCHEMA,
    FaultKind,
    StandinStore,
    group_id,
    hash_password,
    user_id,
)
from prefect_hcs.testing.standin_hook import (
    HOST_PREFIX,
    install_standin,
    standin_host,
    standin_options,
    uninstall_standin,
)

__all__ = [
    "DB_NAME",
    "FAULT_OPS",
    "HOST_PREFIX",
    "StandinAdapter",
    "StandinServer",
    "install_standin",
    "standin_host",
    "standin_options",
    "uninstall_standin",
]


class StandinServer:
    """Admin side of a stand-in: create it, add users and plates, inject faults, inspect."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._store = StandinStore(directory)
        if not self._store.db_path.exists():
            raise FileNotFoundError(
                f"no OMERO stand-in at {directory}: create one with StandinServer.create(dir)"
            )

    @property
    def directory(self) -> Path:
        """The stand-in's folder (SQLite database and pixel files)."""
        return self._store.directory

    @classmethod
    def create(cls, directory: str | os.PathLike[str]) -> StandinServer:
        """Create (or reopen) a stand-in in `directory`."""
        path = Path(directory)
        (path / "pixels").mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path / DB_NAME, timeout=60)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            db.commit()
        return cls(path)

    def connect(
        self, user: str, password: str | SecretStr | None = None, group: str | None = None
    ) -> StandinAdapter:
        """An adapter logged in as `user` (the login is checked on first use, as with OMERO)."""
        return StandinAdapter(self.directory, user, password, group=group)

    # -- users and groups -------------------------------------------------------------------

    def add_group(self, name: str) -> int:
        """Create the group `name` if needed; return its id."""
        with self._store.tx(write=True) as db:
            return group_id(db, name, create=True)

    def add_user(
        self, name: str, password: str | None = None, group: str | Sequence[str] = "default"
    ) -> int:
        """Add a user to one or more groups (created if needed). No password: any login works."""
        groups = [group] if isinstance(group, str) else list(group)
        salt = secrets.token_hex(8)
        pw_hash = None if password is None else hash_password(salt, password)
        with self._store.tx(write=True) as db:
            row = db.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                uid = db.execute(
                    "INSERT INTO users (name, salt, pw_hash) VALUES (?, ?, ?) RETURNING id",
                    (name, salt, pw_hash),
                ).fetchone()[0]
            else:
                uid = row["id"]
                db.execute(
                    "UPDATE users SET salt = ?, pw_hash = ? WHERE id = ?", (salt, pw_hash, uid)
                )
            for g in groups:
                db.execute(
                    "INSERT OR IGNORE INTO members VALUES (?, ?)", (uid, group_id(db, g, True))
                )
            return int(uid)

    # -- plates -----------------------------------------------------------------------------

    def add_plate(
        self,
        name: str,
        group: str,
        wells: Mapping[str, Sequence[np.ndarray]],
        *,
        channel_names: Sequence[str] = (),
        owner: str | None = None,
        plate_map: Mapping[str, str] | None = None,
    ) -> int:
        """Create a plate from arrays: {well id: [one (T, C, Z, Y, X) array per site]}."""
        with self._store.tx(write=True) as db:
            gid = group_id(db, group, create=False)
            owner_id = user_id(db, owner) if owner else None
            plate_id = db.execute(
                "INSERT INTO plates (name, group_id, owner_id) VALUES (?, ?, ?)",
                (name, gid, owner_id),
            ).lastrowid
            assert plate_id is not None
            for well, sites in wells.items():
                row, col = split_well(well)
                well_pk = db.execute(
                    "INSERT INTO wells (plate_id, row, col) VALUES (?, ?, ?)",
                    (plate_id, row, col),
                ).lastrowid
                for idx, pixels in enumerate(sites):
                    image_id = self._add_image(
                        db, f"{well}_s{idx + 1:03d}", gid, pixels, channel_names
                    )
                    db.execute(
                        "INSERT INTO wellsamples (well_id, idx, image_id) VALUES (?, ?, ?)",
                        (well_pk, idx, image_id),
                    )
            if plate_map:
                ann = db.execute(
                    "INSERT INTO annotations (kind, ns, map_json, group_id, owner_id) "
                    "VALUES ('map', ?, ?, ?, ?)",
                    (PLATE_NS, json.dumps(dict(plate_map)), gid, owner_id),
                ).lastrowid
                db.execute("INSERT INTO links VALUES ('Plate', ?, ?)", (plate_id, ann))
            return int(plate_id)

    def _add_image(
        self,
        db: sqlite3.Connection,
        name: str,
        gid: int,
        pixels: np.ndarray,
        channel_names: Sequence[str],
    ) -> int:
        if pixels.ndim != 5:
            raise ValueError(f"image {name}: pixels must be (T, C, Z, Y, X), got {pixels.shape}")
        t, c, z, y, x = pixels.shape
        image_id = db.execute(
            "INSERT INTO images (name, group_id, size_z, size_c, size_t, size_y, size_x, dtype, "
            "channel_names) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, gid, z, c, t, y, x, pixels.dtype.name, json.dumps(list(channel_names))),
        ).lastrowid
        assert image_id is not None
        target = self._store.pixels_path(image_id)
        tmp = target.with_suffix(".tmp.npy")
        np.save(tmp, np.ascontiguousarray(pixels))
        os.replace(tmp, target)
        return int(image_id)

    def import_plate_from_layout(
        self,
        layout: PlateLayout,
        reader: Callable[[ImageRef], np.ndarray] | None = None,
        *,
        group: str,
        name: str | None = None,
        owner: str | None = None,
    ) -> int:
        """Upload a plate discovered on disk: one Image per (well, site), as OMERO imports do.

        `reader` returns the pixels of a layout plane; by default it reads the plane's TIFF through
        fsspec from the layout's URL. Missing planes are zero. The plate's grid, overlap, pixel size
        and channel names go into a MapAnnotation (namespace PLATE_NS) that the handler reads back.
        """
        if reader is None:
            from prefect_hcs.formats.detect import read_plane

            def reader(ref: ImageRef) -> np.ndarray:
                return read_plane(layout.url, ref)

        ts, cs, zs = layout.timepoints, layout.channels, layout.z_planes
        shape = (len(ts), len(cs), len(zs), *layout.image_shape)
        wells: dict[str, list[np.ndarray]] = {}
        for well in layout.wells:
            sites = {s: np.zeros(shape, dtype=layout.dtype) for s in layout.sites}
            for ref in layout.images_for_well(well):
                plane = np.asarray(reader(ref))
                sites[ref.site][ts.index(ref.timepoint), cs.index(ref.channel), zs.index(ref.z)] = (
                    plane
                )
            wells[well] = [sites[s] for s in layout.sites]
        names = [layout.channel_names.get(c, f"w{c}") for c in cs]
        plate_map = {
            "channel_names": json.dumps(names),
            "source_format": layout.format,
            "source_plate": layout.plate_id,
        }
        if layout.grid is not None:
            plate_map.update(grid_rows=str(layout.grid[0]), grid_cols=str(layout.grid[1]))
        if layout.tile_overlap is not None:
            plate_map["overlap"] = str(layout.tile_overlap)
        if layout.pixel_size_um is not None:
            plate_map["pixel_size_um"] = str(layout.pixel_size_um)
        return self.add_plate(
            name or layout.plate_id,
            group,
            wells,
            channel_names=names,
            owner=owner,
            plate_map=plate_map,
        )

    # -- faults and inspection --------------------------------------------------------------

    def inject_fault(
        self, op: str, times: int = 1, error: FaultKind = "connection", midway: bool = False
    ) -> None:
        """Make the next `times` calls of adapter operation `op` fail (in any process).

        `midway=True` (write operations) fails after part of the write was done inside the
        transaction, which then rolls back: this is how "the upload broke half-way" looks.
        """
        if op not in FAULT_OPS:
            raise ValueError(f"unknown operation {op!r}: one of {', '.join(FAULT_OPS)}")
        with self._store.tx(write=True) as db:
            db.execute(
                "INSERT INTO faults (op, remaining, kind, midway) VALUES (?, ?, ?, ?)",
                (op, times, error, int(midway)),
            )

    def clear_faults(self) -> None:
        """Remove every injected fault that has not struck yet."""
        with self._store.tx(write=True) as db:
            db.execute("DELETE FROM faults")

    def counts(self) -> dict[str, int]:
        """Row counts per table, to check that a failed operation left nothing behind."""
        tables = ("plates", "images", "originalfiles", "annotations", "links")
        with self._store.tx() as db:
            return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
