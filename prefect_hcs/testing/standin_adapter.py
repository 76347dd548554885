"""The OMERO stand-in seen as a user: an `OmeroAdapter` over a stand-in folder.

Logged in as one user (password checked on first use, as with OMERO), reading only plates of the
user's groups, writing annotations in the annotated object's group; every call may hit an
injected fault (see `omero_standin.StandinServer.inject_fault`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Mapping

import numpy as np
from pydantic import SecretStr

from prefect_hcs.storage.omero_errors import (
    OmeroAuthError,
    OmeroError,
    OmeroNotFound,
    OmeroPermissionDenied,
)
from prefect_hcs.storage.omero_gateway import (
    AnnotationTarget,
    FileAnnotationInfo,
    ImageInfo,
    PlateInfo,
    WellInfo,
)
from prefect_hcs.testing.standin_db import (
    StandinStore,
    hash_password,
    image_info,
)

__all__ = ["StandinAdapter"]


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
        self._store = StandinStore(directory)
        self.username = user
        self._password = SecretStr(password) if isinstance(password, str) else password
        self.group = group
        self._uid: int | None = None
        self._groups: frozenset[int] = frozenset()

    def __repr__(self) -> str:
        return f"StandinAdapter({self.username}@{self._store.directory}, group={self.group!r})"

    @property
    def user(self) -> str:
        """The user this adapter is logged in as."""
        return self.username

    def connect(self) -> None:
        """Log in now (OmeroAuthError for a wrong password or a group the user is not in)."""
        self._login()

    def close(self) -> None:
        """Nothing to close: the stand-in keeps no connection open between calls."""
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
                and (given is None or hash_password(row["salt"], given) != row["pw_hash"])
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
        """The plate's tree, if the user may read the plate's group."""
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
                entry[2].append(image_info(r))
        return PlateInfo(
            plate_id,
            name,
            tuple(WellInfo(wid, row, col, tuple(imgs)) for wid, (row, col, imgs) in wells.items()),
        )

    def read_plane(self, image_id: int, z: int, c: int, t: int) -> np.ndarray:
        """One 2-D plane from the image's ``.npy`` (z, c, t 0-based)."""
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
        """Store `data` as an unlinked FileAnnotation in the target's group; return its id."""
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
        """Link an annotation to the target (a separate step, as in OMERO)."""
        self._op("link_annotation")
        with self._store.tx(write=True) as db:
            self._group_of(db, *target)
            self._group_of(db, "Annotation", annotation_id)
            db.execute("INSERT OR IGNORE INTO links VALUES (?, ?, ?)", (*target, annotation_id))

    def list_file_annotations(
        self, target: AnnotationTarget, ns: str | None = None
    ) -> list[FileAnnotationInfo]:
        """The target's FileAnnotations (of namespace `ns` when given)."""
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
        """The content of a FileAnnotation's file."""
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
        """Delete an annotation and its links."""
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
        """The target's MapAnnotation of namespace `ns` as a dict, or None."""
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
        """Attach a new MapAnnotation, then delete older ones of the same namespace."""
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
