"""The real OMERO adapter: `BlitzGatewayAdapter` over omero-py's ``BlitzGateway``.

omero-py is imported lazily (on the first connection), so the rest of prefect-hcs works without
it. Every omero-py method, attribute and keyword the adapter uses is listed in
`prefect_hcs.storage.omero_api.OMERO_API`;
``tests/test_omero_contract.py`` checks, by reading omero-py's source with ``ast``, that the table
covers every call made here and that each entry exists in omero-py.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
from pydantic import SecretStr

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
    PlateInfo,
    WellInfo,
)

__all__ = ["BlitzGatewayAdapter"]


#: Exception class names (anywhere in the MRO) that mean "the connection is gone: retry".
_TRANSIENT = frozenset(
    {
        "ConnectionLostException",
        "ConnectionRefusedException",
        "ConnectFailedException",
        "ConnectTimeoutException",
        "TimeoutException",
        "SocketException",
        "CommunicatorDestroyedException",
        "ObjectNotExistException",
        "SessionNotExistException",
        "CloseConnectionException",
    }
)


_SERVER_ERRORS = frozenset(
    {"ServerError", "ApiUsageException", "ValidationException", "InternalException"}
)


def _classify(exc: BaseException, what: str) -> BaseException | None:
    """Map an omero-py/Ice exception to an adapter error by class name (no Ice import needed).

    None: not an OMERO error (e.g. a bug), to be re-raised as it is.
    """
    if isinstance(exc, OmeroError):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _TRANSIENT:
        return OmeroConnectionError(f"{what}: connection to OMERO lost ({type(exc).__name__})")
    if "SecurityViolation" in names:
        return OmeroPermissionDenied(f"{what}: permission denied by OMERO ({type(exc).__name__})")
    if "PermissionDeniedException" in names:
        return OmeroAuthError(f"{what}: OMERO refused the login ({type(exc).__name__})")
    if names & _SERVER_ERRORS:
        return OmeroError(f"{what}: {type(exc).__name__} {getattr(exc, 'message', '')}".rstrip())
    return None


def _import_gateway() -> Any:
    try:
        from omero import gateway
    except ImportError as exc:
        raise ImportError(
            "the real OMERO adapter needs omero-py and its Ice runtime: "
            "`pip install 'prefect-hcs[omero]'` after installing zeroc-ice 3.6.5 from Glencoe "
            "Software's wheels (github.com/glencoesoftware/zeroc-ice-py-linux-x86_64) or conda-forge "
            f"(`conda install -c conda-forge zeroc-ice=3.6.5`). Import failed with: {exc}"
        ) from exc
    return gateway


class BlitzGatewayAdapter:
    """`OmeroAdapter` over omero-py's BlitzGateway.

    The Ice connection cannot cross a process boundary: pickling keeps only host/port/user/
    password/group and each process reconnects lazily on first use. Calls are serialised with a
    lock; a session idle for `keepalive_s` is pinged with ``keepAlive()`` before the next call,
    and a lost connection is dropped so that the next (retried) call reconnects.
    """

    def __init__(
        self,
        host: str,
        username: str,
        password: SecretStr | str,
        *,
        port: int = 4064,
        group: str | None = None,
        secure: bool = True,
        keepalive_s: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password if isinstance(password, SecretStr) else SecretStr(password)
        self.group = group
        self.secure = secure
        self.keepalive_s = keepalive_s
        self._conn: Any = None
        self._last_used = 0.0
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"BlitzGatewayAdapter({self.username}@{self.host}:{self.port}, group={self.group!r})"

    @property
    def user(self) -> str:
        """The OMERO user name this adapter logs in as."""
        return self.username

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_conn"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # -- connection -------------------------------------------------------------------------

    def _where(self) -> str:
        return f"user {self.username!r} at {self.host}:{self.port}"

    def _connection(self) -> Any:
        """The live gateway, connecting or pinging as needed (call with the lock held)."""
        now = time.monotonic()
        if self._conn is not None and now - self._last_used > self.keepalive_s:
            try:
                alive = self._conn.keepAlive()
            except Exception:
                alive = False
            if not alive:
                self._drop()
        if self._conn is None:
            self._conn = self._connect()
        self._last_used = now
        return self._conn

    def _connect(self) -> Any:
        gateway = _import_gateway()
        conn = gateway.BlitzGateway(
            self.username,
            self._password.get_secret_value(),
            host=self.host,
            port=self.port,
            secure=self.secure,
            group=self.group,
        )
        try:
            ok = conn.connect()
        except Exception as exc:
            err = _classify(exc, f"connecting as {self._where()}")
            if err is None:
                raise
            raise err from None
        if not ok:
            err = conn.getLastError()
            if err is not None and {c.__name__ for c in type(err).__mro__} & _TRANSIENT:
                raise OmeroConnectionError(f"cannot reach OMERO as {self._where()}")
            raise OmeroAuthError(
                f"OMERO login failed for {self._where()}: check the user name and password "
                "in the OMERO credentials block"
            )
        if self.group is not None and conn.getGroupFromContext().getName() != self.group:
            conn.close()
            raise OmeroAuthError(f"{self._where()} is not a member of OMERO group {self.group!r}")
        conn.SERVICE_OPTS.setOmeroGroup("-1")  # read across all of the user's groups
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    @contextmanager
    def _session(self, what: str) -> Iterator[Any]:
        """The connection for one operation; omero-py/Ice errors become adapter errors."""
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except OmeroError:
                raise
            except Exception as exc:
                err = _classify(exc, what)
                if err is None:
                    raise
                if isinstance(err, OmeroConnectionError):
                    self._drop()
                raise err from exc

    @contextmanager
    def _in_group(self, conn: Any, obj: Any) -> Iterator[None]:
        """Writes must name a concrete group: that of the object being annotated."""
        previous = conn.SERVICE_OPTS.getOmeroGroup()
        conn.SERVICE_OPTS.setOmeroGroup(obj.getDetails().getGroup().getId())
        try:
            yield
        finally:
            conn.SERVICE_OPTS.setOmeroGroup(previous)

    def _get(self, conn: Any, obj_type: str, obj_id: int) -> Any:
        obj = conn.getObject(obj_type, obj_id)
        if obj is None:
            raise OmeroNotFound(
                f"OMERO {obj_type} {obj_id} not found, or not readable by {self._where()} "
                "(it may belong to a group this user is not a member of)"
            )
        return obj

    def connect(self) -> None:
        """Log in now, so that bad credentials fail here (OmeroAuthError), not at the first read."""
        with self._lock:
            self._connection()

    def close(self) -> None:
        """Close the BlitzGateway connection (the next call reconnects)."""
        with self._lock:
            self._drop()

    # -- plate tree and pixels --------------------------------------------------------------

    def get_plate(self, plate_id: int) -> PlateInfo:
        """The plate's tree, read in one session (see `OmeroAdapter.get_plate`)."""
        with self._session(f"reading plate {plate_id}") as conn:
            plate = self._get(conn, "Plate", plate_id)
            wells = tuple(
                WellInfo(
                    well_id=well.getId(),
                    row=well.row,
                    column=well.column,
                    images=tuple(self._image_info(ws.getImage()) for ws in well.listChildren()),
                )
                for well in plate.listChildren()
            )
            return PlateInfo(plate_id, plate.getName() or "", tuple(sorted(wells, key=_pos)))

    @staticmethod
    def _image_info(image: Any) -> ImageInfo:
        return ImageInfo(
            image_id=image.getId(),
            name=image.getName() or "",
            size_z=image.getSizeZ(),
            size_c=image.getSizeC(),
            size_t=image.getSizeT(),
            size_y=image.getSizeY(),
            size_x=image.getSizeX(),
            dtype=str(image.getPixelsType()),
            channel_names=tuple(image.getChannelLabels() or ()),
        )

    def read_plane(self, image_id: int, z: int, c: int, t: int) -> np.ndarray:
        """One 2-D plane of the image's primary pixels; z, c, t are 0-based."""
        with self._session(f"reading plane z={z} c={c} t={t} of image {image_id}") as conn:
            image = self._get(conn, "Image", image_id)
            return np.asarray(image.getPrimaryPixels().getPlane(z, c, t))

    # -- annotations ------------------------------------------------------------------------

    def upload_file_annotation(
        self, target: AnnotationTarget, data: bytes, path: str, name: str, ns: str, mimetype: str
    ) -> int:
        """Upload `data` as an unlinked FileAnnotation in the target's group; return its id."""
        with self._session(f"uploading {path}/{name} for {target[0]} {target[1]}") as conn:
            obj = self._get(conn, *target)
            gateway = _import_gateway()
            with self._in_group(conn, obj):
                original = conn.createOriginalFileFromFileObj(
                    io.BytesIO(data), path, name, len(data), mimetype=mimetype
                )
                ann = gateway.FileAnnotationWrapper(conn)
                ann.setNs(ns)
                ann.setFile(original)
                ann.save()
            return ann.getId()

    def link_annotation(self, target: AnnotationTarget, annotation_id: int) -> None:
        """Link annotation `annotation_id` to the target, in the target's group."""
        with self._session(f"linking annotation {annotation_id} to {target[0]}") as conn:
            obj = self._get(conn, *target)
            obj.linkAnnotation(self._get(conn, "Annotation", annotation_id))

    def list_file_annotations(
        self, target: AnnotationTarget, ns: str | None = None
    ) -> list[FileAnnotationInfo]:
        """The target's FileAnnotations (of namespace `ns` when given)."""
        with self._session(f"listing annotations of {target[0]} {target[1]}") as conn:
            obj = self._get(conn, *target)
            return [
                FileAnnotationInfo(
                    annotation_id=ann.getId(),
                    ns=ann.getNs(),
                    path=(ann.getFile().getPath() or "").strip("/"),
                    name=ann.getFileName() or "",
                    size=int(ann.getFileSize() or 0),
                    mimetype=ann.getFile().getMimetype(),
                )
                for ann in obj.listAnnotations(ns=ns)
                if type(ann).__name__ == "FileAnnotationWrapper"
            ]

    def download_file_annotation(self, annotation_id: int) -> bytes:
        """The file of a FileAnnotation, read in chunks."""
        with self._session(f"downloading annotation {annotation_id}") as conn:
            ann = self._get(conn, "FileAnnotation", annotation_id)
            return b"".join(ann.getFileInChunks())

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete an annotation and, with it, its links (waits for OMERO to finish)."""
        with self._session(f"deleting annotation {annotation_id}") as conn:
            conn.deleteObjects("Annotation", [annotation_id], wait=True)

    def get_map_annotation(self, target: AnnotationTarget, ns: str) -> dict[str, str] | None:
        """The target's MapAnnotation of namespace `ns` as a dict, or None."""
        with self._session(f"reading map annotation of {target[0]} {target[1]}") as conn:
            obj = self._get(conn, *target)
            maps = [
                ann
                for ann in obj.listAnnotations(ns=ns)
                if type(ann).__name__ == "MapAnnotationWrapper"
            ]
            if not maps:
                return None
            newest = max(maps, key=lambda ann: ann.getId())
            return {str(k): str(v) for k, v in newest.getValue()}

    def set_map_annotation(
        self, target: AnnotationTarget, ns: str, values: Mapping[str, str]
    ) -> int:
        """Attach a new MapAnnotation, then delete older ones of the same namespace."""
        with self._session(f"writing map annotation of {target[0]} {target[1]}") as conn:
            obj = self._get(conn, *target)
            old = [ann.getId() for ann in obj.listAnnotations(ns=ns)]
            gateway = _import_gateway()
            with self._in_group(conn, obj):
                ann = gateway.MapAnnotationWrapper(conn)
                ann.setNs(ns)
                ann.setValue([(str(k), str(v)) for k, v in values.items()])
                ann.save()
                obj.linkAnnotation(ann)
            if old:
                conn.deleteObjects("Annotation", old, wait=True)
            return ann.getId()


def _pos(well: WellInfo) -> tuple[int, int]:
    return (well.row, well.column)
