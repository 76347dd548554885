"""The OMERO stand-in's storage: one SQLite database and one ``.npy`` per image, in a folder.

Every write is one SQLite transaction, so a failure leaves nothing half-written; state lives on
disk so that separate processes (Prefect workers, Dask workers) share it. Injected faults are rows
of the database too, so they reach other processes. Used by `omero_standin` (the admin side) and
`standin_adapter` (the `OmeroAdapter` side).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from prefect_hcs.storage.omero_errors import (
    OmeroConnectionError,
    OmeroError,
    OmeroNotFound,
    OmeroPermissionDenied,
)
from prefect_hcs.storage.omero_gateway import ImageInfo

__all__ = [
    "DB_NAME",
    "FAULT_OPS",
    "SCHEMA",
    "FaultKind",
    "StandinStore",
    "group_id",
    "hash_password",
    "image_info",
    "user_id",
]

DB_NAME = "omero.sqlite"
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

SCHEMA = """
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


def hash_password(salt: str, password: str) -> str:
    """Salted SHA-256 of a password, as stored in the users table."""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 10_000).hex()


class StandinStore:
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
        """The ``.npy`` file holding an image's pixels (t, c, z, y, x)."""
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


def image_info(r: sqlite3.Row) -> ImageInfo:
    """An `ImageInfo` from a row of the images table."""
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


def group_id(db: sqlite3.Connection, name: str, create: bool) -> int:
    """Id of group `name`, created first when `create` (else OmeroNotFound if absent)."""
    row = db.execute("SELECT id FROM groups WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return int(row[0])
    if not create:
        raise ValueError(f"no OMERO group {name!r} in the stand-in: add it with add_group/add_user")
    return int(db.execute("INSERT INTO groups (name) VALUES (?)", (name,)).lastrowid or 0)


def user_id(db: sqlite3.Connection, name: str) -> int:
    """Id of user `name` (OmeroNotFound if there is none)."""
    row = db.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise ValueError(f"no OMERO user {name!r} in the stand-in: add it with add_user")
    return int(row[0])
