"""An OMERO stand-in: OMERO's object model in a folder (SQLite + one .npy per image).

There is no OMERO server here, so tests and ``prefect-hcs demo --omero`` use this instead. It is a
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

import hashlib
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import SecretStr

from prefect_hcs.formats.layout import ImageRef, PlateLayout, split_well
from prefect_hcs.storage.omero_errors import (
    OmeroAuthError,
    OmeroConnectionError,
    OmeroError,
    OmeroNotFound,
    OmeroPermissionDenied,
)
from prefect_hcs.storage.omero_gateway import (
    AnnotationTarget,
    FileAnnotationInfo,
    ImageInfo,
    OmeroAdapter,
    PlateInfo,
    WellInfo,
)
from prefect_hcs.storage.omero_login import (
    GatewayFactory,
    OmeroLogin,
    gateway_factory,
    install_gateway_factory,
)
from prefect_hcs.storage.omero_paths import PLATE_NS

DB_NAME = "omero.sqlite"
#: Host prefix of logins served by the stand-in once `install_standin` ran: ``standin:<folder>``.
HOST_PREFIX = "standin:"
FAULT_OPS = (
    "connect",
    "get_plate",
    "read_plane",
    "upload_file_annotation",
    "link_annotation",
    "list_file_annotations",
    "download_file_annotation",
    "delete_annotation",
    "get_map_annotation",
    "set_map_annotation",
)
FaultKind = Literal["connection", "permission", "notfound", "server"]
_FAULT_ERRORS: dict[str, type[OmeroError]] = {
    "connection": OmeroConnectionError,
    "permission": OmeroPermissionDenied,
    "notfound": OmeroNotFound,
    "server": OmeroError,
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, salt TEXT, pw_hash TEXT);
CREATE TABLE IF NOT EXISTS members (
    user_id INTEGER NOT NULL, group_id INTEGER NOT NULL, PRIMARY KEY (user_id, group_id));
CREATE TABLE IF NOT EXISTS plates (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, group_id INTEGER NOT NULL, owner_id INTEGER);
CREATE TABLE IF NOT EXISTS wells (
    id INTEGER PRIMARY KEY, plate_id INTEGER NOT NULL, row INTEGER NOT NULL,
    col INTEGER NOT NULL, UNIQUE (plate_id, row, col));
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, group_id INTEGER NOT NULL,
    size_z INTEGER, size_c INTEGER, size_t INTEGER, size_y INTEGER, size_x INTEGER,
    dtype TEXT, channel_names TEXT);
CREATE TABLE IF NOT EXISTS wellsamples (
    id INTEGER PRIMARY KEY, well_id INTEGER NOT NULL, idx INTEGER NOT NULL,
    image_id INTEGER NOT NULL, UNIQUE (well_id, idx));
CREATE TABLE IF NOT EXISTS originalfiles (
    id INTEGER PRIMARY KEY, path TEXT, name TEXT, size INTEGER, mimetype TEXT, sha1 TEXT,
    data BLOB, group_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, ns TEXT, file_id INTEGER, map_json TEXT,
    group_id INTEGER NOT NULL, owner_id INTEGER);
CREATE TABLE IF NOT EXISTS links (
    parent_type TEXT NOT NULL, parent_id INTEGER NOT NULL, ann_id INTEGER NOT NULL,
    PRIMARY KEY (parent_type, parent_id, ann_id));
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY, op TEXT NOT NULL, remaining INTEGER NOT NULL, kind TEXT NOT NULL,
    midway INTEGER NOT NULL);
"""


def _hash(salt: str, password: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 10_000).hex()


class _Store:
    """SQLite access shared by the server (admin side) and the adapters (user side).

    One connection per thread and process (SQLite connections must not cross either); the store
    itself pickles to just its folder.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.db_path = self.directory / DB_NAME
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "db_path": self.db_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None or self._local.pid != os.getpid():
            if not self.db_path.exists():
                raise OmeroConnectionError(f"no OMERO stand-in at {self.directory} (unreachable)")
            db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, much faster
            self._local.db, self._local.pid = db, os.getpid()
        return db

    @contextmanager
    def tx(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; writers take the lock up front so concurrent processes serialise."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def pixels_path(self, image_id: int) -> Path:
        return self.directory / "pixels" / f"image_{image_id}.npy"

    def take_fault(self, op: str) -> tuple[type[OmeroError], bool] | None:
        """Consume one injected fault for `op` (in its own transaction, so it sticks)."""
        query = (
            "SELECT id, kind, midway FROM faults WHERE op = ? AND remaining > 0 ORDER BY id LIMIT 1"
        )
        if self._db().execute(query, (op,)).fetchone() is None:  # cheap check: faults are rare
            return None
        with self.tx(write=True) as db:
            row = db.execute(query, (op,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE faults SET remaining = remaining - 1 WHERE id = ?", (row["id"],))
            return _FAULT_ERRORS[row["kind"]], bool(row["midway"])


class StandinServer:
    """Admin side of a stand-in: create it, add users and plates, inject faults, inspect."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._store = _Store(directory)
        if not self._store.db_path.exists():
            raise FileNotFoundError(
                f"no OMERO stand-in at {directory}: create one with StandinServer.create(dir)"
            )

    @property
    def directory(self) -> Path:
        """Where the stand-in keeps its database and pixels."""
        return self._store.directory

    @classmethod
    def create(cls, directory: str | os.PathLike[str]) -> StandinServer:
        """Create (or reopen) a stand-in in `directory`."""
        path = Path(directory)
        (path / "pixels").mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path / DB_NAME, timeout=60)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.commit()
        return cls(path)

    def connect(
        self, user: str, password: str | SecretStr | None = None, group: str | None = None
    ) -> StandinAdapter:
        """An adapter logged in as `user` (the login is checked on first use, as with OMERO)."""
        return StandinAdapter(self.directory, user, password, group=group)

    # -- users and groups -------------------------------------------------------------------

    def add_group(self, name: str) -> int:
        """Create (or find) a group; returns its id."""
        with self._store.tx(write=True) as db:
            return _group_id(db, name, create=True)

    def add_user(
        self, name: str, password: str | None = None, group: str | Sequence[str] = "default"
    ) -> int:
        """Add a user to one or more groups (created if needed). No password: any login works."""
        groups = [group] if isinstance(group, str) else list(group)
        salt = secrets.token_hex(8)
        pw_hash = None if password is None else _hash(salt, password)
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
                    "INSERT OR IGNORE INTO members VALUES (?, ?)", (uid, _group_id(db, g, True))
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
            gid = _group_id(db, group, create=False)
            owner_id = _user_id(db, owner) if owner else None
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
        """Remove every injected fault, so later calls behave normally."""
        with self._store.tx(write=True) as db:
            db.execute("DELETE FROM faults")

    def counts(self) -> dict[str, int]:
        """Row counts per table, to check that a failed operation left nothing behind."""
        tables = ("plates", "images", "originalfiles", "annotations", "links")
        with self._store.tx() as db:
            return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}


class StandinAdapter:
    """`OmeroAdapter` over a stand-in folder, logged in as one user. Picklable (no live state)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        user: str,
        password: str | SecretStr | None = None,
        *,
        group: str | None = None,
    ) -> None:
        self._store = _Store(directory)
        self.username = user
        self._password = SecretStr(password) if isinstance(password, str) else password
        self.group = group
        self._uid: int | None = None
        self._groups: frozenset[int] = frozenset()

    def __repr__(self) -> str:
        return f"StandinAdapter({self.username}@{self._store.directory}, group={self.group!r})"

    @property
    def user(self) -> str:
        """See `OmeroAdapter.user`."""
        return self.username

    def connect(self) -> None:
        """See `OmeroAdapter.connect`; checks the password like OMERO."""
        self._login()

    def close(self) -> None:
        """See `OmeroAdapter.close`."""
        self._uid = None

    # -- session ----------------------------------------------------------------------------

    def _fault(self, op: str) -> type[OmeroError] | None:
        """Raise an injected fault for `op`, or return its error if it must strike half-way."""
        hit = self._store.take_fault(op)
        if hit is None:
            return None
        error, midway = hit
        if midway:
            return error
        raise error(f"injected fault: {op} failed for user {self.username!r}")

    def _login(self) -> None:
        if self._uid is not None:
            return
        self._fault("connect")
        with self._store.tx() as db:
            row = db.execute(
                "SELECT id, salt, pw_hash FROM users WHERE name = ?", (self.username,)
            ).fetchone()
            given = self._password.get_secret_value() if self._password else None
            if row is None or (
                row["pw_hash"] is not None
                and (given is None or _hash(row["salt"], given) != row["pw_hash"])
            ):
                raise OmeroAuthError(
                    f"OMERO login failed for user {self.username!r} at stand-in "
                    f"{self._store.directory}: check the user name and password"
                )
            groups = {
                r["group_id"]: r["name"]
                for r in db.execute(
                    "SELECT m.group_id, g.name FROM members m JOIN groups g ON g.id = m.group_id "
                    "WHERE m.user_id = ?",
                    (row["id"],),
                )
            }
        if self.group is not None and self.group not in groups.values():
            raise OmeroAuthError(
                f"user {self.username!r} is not a member of OMERO group {self.group!r}"
            )
        self._uid, self._groups = int(row["id"]), frozenset(groups)

    def _op(self, op: str) -> type[OmeroError] | None:
        self._login()
        return self._fault(op)

    def _group_of(self, db: sqlite3.Connection, obj_type: str, obj_id: int) -> int:
        """Group of an object, checking that it exists and the user may read it."""
        queries = {
            "Plate": "SELECT group_id FROM plates WHERE id = ?",
            "Well": "SELECT p.group_id FROM wells w JOIN plates p ON p.id = w.plate_id "
            "WHERE w.id = ?",
            "Image": "SELECT group_id FROM images WHERE id = ?",
            "Annotation": "SELECT group_id FROM annotations WHERE id = ?",
        }
        if obj_type not in queries:
            raise OmeroError(f"unsupported OMERO object type {obj_type!r}")
        row = db.execute(queries[obj_type], (obj_id,)).fetchone()
        if row is None:
            raise OmeroNotFound(f"OMERO {obj_type} {obj_id} not found")
        if row[0] not in self._groups:
            raise OmeroPermissionDenied(
                f"OMERO {obj_type} {obj_id} belongs to a group user {self.username!r} is not a "
                "member of: ask its owner to move it, or add the user to that group"
            )
        return int(row[0])

    # -- plate tree and pixels --------------------------------------------------------------

    def get_plate(self, plate_id: int) -> PlateInfo:
        """See `OmeroAdapter.get_plate`; only plates of the user's groups are visible."""
        self._op("get_plate")
        with self._store.tx() as db:
            self._group_of(db, "Plate", plate_id)
            name = db.execute("SELECT name FROM plates WHERE id = ?", (plate_id,)).fetchone()[0]
            rows = db.execute(
                "SELECT w.id AS well_id, w.row, w.col, i.* FROM wells w "
                "LEFT JOIN wellsamples ws ON ws.well_id = w.id "
                "LEFT JOIN images i ON i.id = ws.image_id "
                "WHERE w.plate_id = ? ORDER BY w.row, w.col, ws.idx",
                (plate_id,),
            ).fetchall()
        wells: dict[int, tuple[int, int, list[ImageInfo]]] = {}
        for r in rows:
            entry = wells.setdefault(r["well_id"], (r["row"], r["col"], []))
            if r["id"] is not None:
                entry[2].append(_image_info(r))
        return PlateInfo(
            plate_id,
            name,
            tuple(WellInfo(wid, row, col, tuple(imgs)) for wid, (row, col, imgs) in wells.items()),
        )

    def read_plane(self, image_id: int, z: int, c: int, t: int) -> np.ndarray:
        """See `OmeroAdapter.read_plane`."""
        self._op("read_plane")
        with self._store.tx() as db:
            self._group_of(db, "Image", image_id)
        pixels = np.load(self._store.pixels_path(image_id), mmap_mode="r")
        size_t, size_c, size_z = pixels.shape[:3]
        if not (0 <= z < size_z and 0 <= c < size_c and 0 <= t < size_t):
            raise OmeroError(f"image {image_id} has no plane z={z} c={c} t={t}")
        return np.array(pixels[t, c, z])

    # -- annotations ------------------------------------------------------------------------

    def upload_file_annotation(
        self, target: AnnotationTarget, data: bytes, path: str, name: str, ns: str, mimetype: str
    ) -> int:
        """See `OmeroAdapter.upload_file_annotation`; an injected fault may stop it midway."""
        midway = self._op("upload_file_annotation")
        with self._store.tx(write=True) as db:
            gid = self._group_of(db, *target)
            file_id = db.execute(
                "INSERT INTO originalfiles (path, name, size, mimetype, sha1, data, group_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (path, name, len(data), mimetype, hashlib.sha1(data).hexdigest(), data, gid),
            ).lastrowid
            if midway:
                raise midway(f"injected fault: upload of {name!r} broke half-way")
            ann_id = db.execute(
                "INSERT INTO annotations (kind, ns, file_id, group_id, owner_id) "
                "VALUES ('file', ?, ?, ?, ?)",
                (ns, file_id, gid, self._uid),
            ).lastrowid
            return int(ann_id or 0)

    def link_annotation(self, target: AnnotationTarget, annotation_id: int) -> None:
        """See `OmeroAdapter.link_annotation`."""
        self._op("link_annotation")
        with self._store.tx(write=True) as db:
            self._group_of(db, *target)
            self._group_of(db, "Annotation", annotation_id)
            db.execute("INSERT OR IGNORE INTO links VALUES (?, ?, ?)", (*target, annotation_id))

    def list_file_annotations(
        self, target: AnnotationTarget, ns: str | None = None
    ) -> list[FileAnnotationInfo]:
        """See `OmeroAdapter.list_file_annotations`."""
        self._op("list_file_annotations")
        with self._store.tx() as db:
            self._group_of(db, *target)
            rows = db.execute(
                "SELECT a.id, a.ns, f.path, f.name, f.size, f.mimetype FROM links l "
                "JOIN annotations a ON a.id = l.ann_id JOIN originalfiles f ON f.id = a.file_id "
                "WHERE l.parent_type = ? AND l.parent_id = ? AND a.kind = 'file' "
                "AND (? IS NULL OR a.ns = ?) ORDER BY a.id",
                (*target, ns, ns),
            ).fetchall()
        return [
            FileAnnotationInfo(
                r["id"], r["ns"], r["path"] or "", r["name"] or "", r["size"], r["mimetype"]
            )
            for r in rows
        ]

    def download_file_annotation(self, annotation_id: int) -> bytes:
        """See `OmeroAdapter.download_file_annotation`."""
        self._op("download_file_annotation")
        with self._store.tx() as db:
            self._group_of(db, "Annotation", annotation_id)
            row = db.execute(
                "SELECT f.data FROM annotations a JOIN originalfiles f ON f.id = a.file_id "
                "WHERE a.id = ?",
                (annotation_id,),
            ).fetchone()
        if row is None:
            raise OmeroNotFound(f"OMERO annotation {annotation_id} has no file")
        return bytes(row[0])

    def delete_annotation(self, annotation_id: int) -> None:
        """See `OmeroAdapter.delete_annotation`; an injected fault may stop it midway."""
        midway = self._op("delete_annotation")
        with self._store.tx(write=True) as db:
            self._group_of(db, "Annotation", annotation_id)
            db.execute("DELETE FROM links WHERE ann_id = ?", (annotation_id,))
            if midway:
                raise midway(f"injected fault: delete of {annotation_id} broke half-way")
            db.execute(
                "DELETE FROM originalfiles WHERE id = (SELECT file_id FROM annotations "
                "WHERE id = ?)",
                (annotation_id,),
            )
            db.execute("DELETE FROM annotations WHERE id = ?", (annotation_id,))

    def get_map_annotation(self, target: AnnotationTarget, ns: str) -> dict[str, str] | None:
        """See `OmeroAdapter.get_map_annotation`."""
        self._op("get_map_annotation")
        with self._store.tx() as db:
            self._group_of(db, *target)
            row = db.execute(
                "SELECT a.map_json FROM links l JOIN annotations a ON a.id = l.ann_id "
                "WHERE l.parent_type = ? AND l.parent_id = ? AND a.kind = 'map' AND a.ns = ? "
                "ORDER BY a.id DESC LIMIT 1",
                (*target, ns),
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def set_map_annotation(
        self, target: AnnotationTarget, ns: str, values: Mapping[str, str]
    ) -> int:
        """See `OmeroAdapter.set_map_annotation`; an injected fault may stop it midway."""
        midway = self._op("set_map_annotation")
        with self._store.tx(write=True) as db:
            gid = self._group_of(db, *target)
            old = [
                r[0]
                for r in db.execute(
                    "SELECT a.id FROM links l JOIN annotations a ON a.id = l.ann_id "
                    "WHERE l.parent_type = ? AND l.parent_id = ? AND a.kind = 'map' AND a.ns = ?",
                    (*target, ns),
                )
            ]
            ann_id = db.execute(
                "INSERT INTO annotations (kind, ns, map_json, group_id, owner_id) "
                "VALUES ('map', ?, ?, ?, ?)",
                (ns, json.dumps({str(k): str(v) for k, v in values.items()}), gid, self._uid),
            ).lastrowid
            db.execute("INSERT INTO links VALUES (?, ?, ?)", (*target, ann_id))
            if midway:
                raise midway("injected fault: map annotation write broke half-way")
            for a in old:
                db.execute("DELETE FROM links WHERE ann_id = ?", (a,))
                db.execute("DELETE FROM annotations WHERE id = ?", (a,))
            return int(ann_id or 0)


def _image_info(r: sqlite3.Row) -> ImageInfo:
    return ImageInfo(
        image_id=r["id"],
        name=r["name"],
        size_z=r["size_z"],
        size_c=r["size_c"],
        size_t=r["size_t"],
        size_y=r["size_y"],
        size_x=r["size_x"],
        dtype=r["dtype"],
        channel_names=tuple(json.loads(r["channel_names"] or "[]")),
    )


def _group_id(db: sqlite3.Connection, name: str, create: bool) -> int:
    row = db.execute("SELECT id FROM groups WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return int(row[0])
    if not create:
        raise ValueError(f"no OMERO group {name!r} in the stand-in: add it with add_group/add_user")
    return int(db.execute("INSERT INTO groups (name) VALUES (?)", (name,)).lastrowid or 0)


def _user_id(db: sqlite3.Connection, name: str) -> int:
    row = db.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise ValueError(f"no OMERO user {name!r} in the stand-in: add it with add_user")
    return int(row[0])


# -- the test-only hook ----------------------------------------------------------------------


def standin_host(directory: str | os.PathLike[str]) -> str:
    """The OMERO host name that means "the stand-in in `directory`" (after `install_standin`)."""
    return HOST_PREFIX + os.path.abspath(directory)


def standin_options(directory: str | os.PathLike[str], user: str, **extra: Any) -> dict[str, Any]:
    """``omero://`` storage options logging in to the stand-in in `directory` as `user`.

    `extra` adds ``group``, ``password``, ``retries`` and the like. JSON-able, so a run's
    parameters can carry them to any process that ran `install_standin`.
    """
    return {"host": standin_host(directory), "user": user, **extra}


class _StandinFactory:
    """Serves ``standin:<folder>`` logins from the stand-in, every other login as before."""

    def __init__(self, fallback: GatewayFactory) -> None:
        self.fallback = fallback

    def __call__(self, login: OmeroLogin) -> OmeroAdapter:
        if not login.host.startswith(HOST_PREFIX):
            return self.fallback(login)
        directory = login.host[len(HOST_PREFIX) :]
        return StandinAdapter(directory, login.username, login.password, group=login.group)


def install_standin() -> None:
    """Let this process reach OMERO stand-ins through ``standin:<folder>`` hosts (idempotent).

    The one way in: nothing in the product calls it, so no configuration value (storage
    options, a credentials block) can make a production process use a stand-in.
    """
    current = gateway_factory()
    if not isinstance(current, _StandinFactory):
        install_gateway_factory(_StandinFactory(current))


def uninstall_standin() -> None:
    """Undo `install_standin`: logins go to the factory that was there before it."""
    current = gateway_factory()
    if isinstance(current, _StandinFactory):
        install_gateway_factory(current.fallback)
