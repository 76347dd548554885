"""The narrow OMERO gateway adapter: the only way prefect-hcs talks to OMERO.

`OmeroAdapter` is the protocol the ``omero`` filesystem and the plate handler use. Two
implementations exist: `BlitzGatewayAdapter` over omero-py's ``BlitzGateway`` (below; omero-py is
imported lazily, so the rest of prefect-hcs works without it) and the SQLite-backed stand-in in
`prefect_hcs.testing.omero_standin` used by tests and demos.

Every omero-py method, attribute and keyword the real adapter uses is listed in `OMERO_API`;
``tests/test_omero_contract.py`` checks, by reading omero-py's source with ``ast``, that the table
covers every call made here and that each entry exists in omero-py.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import SecretStr

from prefect_hcs.storage.omero_errors import (
    OmeroAuthError,
    OmeroConnectionError,
    OmeroError,
    OmeroNotFound,
    OmeroPermissionDenied,
)

__all__ = [
    "OMERO_API",
    "OMERO_OBJECT_TYPES",
    "AnnotationTarget",
    "ApiUse",
    "BlitzGatewayAdapter",
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
    """A Plate with its wells, read in one call so listing a plate needs no per-well round trip."""

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
        """The login name, for messages that say whose permissions refused an operation."""
        ...

    def connect(self) -> None:
        """Log in now (otherwise the first call does): OmeroAuthError on bad credentials."""
        ...

    def get_plate(self, plate_id: int) -> PlateInfo:
        """The plate's wells and images; OmeroNotFound if it is missing or not visible."""
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
        """Link an existing annotation to ``target`` (the annotation stays in its group)."""
        ...

    def list_file_annotations(
        self, target: AnnotationTarget, ns: str | None = None
    ) -> list[FileAnnotationInfo]:
        """File annotations linked to ``target``, optionally of one namespace."""
        ...

    def download_file_annotation(self, annotation_id: int) -> bytes:
        """The content of a file annotation's OriginalFile."""
        ...

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete an annotation (and with it its links)."""
        ...

    def get_map_annotation(self, target: AnnotationTarget, ns: str) -> dict[str, str] | None:
        """Key-value pairs of the newest MapAnnotation of ``ns`` on ``target``, or None."""
        ...

    def set_map_annotation(
        self, target: AnnotationTarget, ns: str, values: Mapping[str, str]
    ) -> int:
        """Attach a new MapAnnotation, then delete older ones of the same namespace."""
        ...

    def close(self) -> None:
        """Close the session; a later call reconnects."""
        ...


# --------------------------------------------------------------------------------------------
# The omero-py API the real adapter uses, checked against omero-py's source by a test.


@dataclass(frozen=True)
class ApiUse:
    """One name the adapter uses on an omero-py object, and where omero-py defines it.

    `source` is relative to site-packages; `member` is looked up on `cls` and its bases in that
    file (``None`` cls: a module-level name). Attributes reached through omero-py's dynamic
    ``__getattr__`` (``well.row``, ``file.getPath()``) point at the generated model class.
    """

    name: str
    source: str
    cls: str | None
    member: str
    keywords: tuple[str, ...] = ()


_GW = "omero/gateway/__init__.py"
OMERO_API: tuple[ApiUse, ...] = (
    ApiUse("BlitzGateway", _GW, "BlitzGateway", "__init__", ("host", "port", "secure", "group")),
    ApiUse("connect", _GW, "BlitzGateway", "connect"),
    ApiUse("getLastError", _GW, "BlitzGateway", "getLastError"),
    ApiUse("keepAlive", _GW, "BlitzGateway", "keepAlive"),
    ApiUse("close", _GW, "BlitzGateway", "close"),
    ApiUse("getGroupFromContext", _GW, "BlitzGateway", "getGroupFromContext"),
    ApiUse("getObject", _GW, "BlitzGateway", "getObject"),
    ApiUse(
        "createOriginalFileFromFileObj",
        _GW,
        "BlitzGateway",
        "createOriginalFileFromFileObj",
        ("mimetype",),
    ),
    ApiUse("deleteObjects", _GW, "BlitzGateway", "deleteObjects", ("wait",)),
    ApiUse("SERVICE_OPTS", _GW, "BlitzGateway", "SERVICE_OPTS"),
    ApiUse("setOmeroGroup", "omero/gateway/utils.py", "ServiceOptsDict", "setOmeroGroup"),
    ApiUse("getOmeroGroup", "omero/gateway/utils.py", "ServiceOptsDict", "getOmeroGroup"),
    ApiUse("getName", _GW, "BlitzObjectWrapper", "getName"),
    ApiUse("getId", _GW, "BlitzObjectWrapper", "getId"),
    ApiUse("getDetails", _GW, "BlitzObjectWrapper", "getDetails"),
    ApiUse("getGroup", _GW, "DetailsWrapper", "getGroup"),
    ApiUse("listChildren", _GW, "PlateWrapper", "listChildren"),
    ApiUse("listChildren", _GW, "WellWrapper", "listChildren"),
    ApiUse("row", "omero_model_WellI.py", "WellI", "getRow"),
    ApiUse("column", "omero_model_WellI.py", "WellI", "getColumn"),
    ApiUse("getImage", _GW, "WellSampleWrapper", "getImage"),
    ApiUse("getSizeZ", _GW, "ImageWrapper", "getSizeZ"),
    ApiUse("getSizeC", _GW, "ImageWrapper", "getSizeC"),
    ApiUse("getSizeT", _GW, "ImageWrapper", "getSizeT"),
    ApiUse("getSizeY", _GW, "ImageWrapper", "getSizeY"),
    ApiUse("getSizeX", _GW, "ImageWrapper", "getSizeX"),
    ApiUse("getPixelsType", _GW, "ImageWrapper", "getPixelsType"),
    ApiUse("getChannelLabels", _GW, "ImageWrapper", "getChannelLabels"),
    ApiUse("getPrimaryPixels", _GW, "ImageWrapper", "getPrimaryPixels"),
    ApiUse("getPlane", _GW, "PixelsWrapper", "getPlane"),
    ApiUse("linkAnnotation", _GW, "BlitzObjectWrapper", "linkAnnotation"),
    ApiUse("listAnnotations", _GW, "BlitzObjectWrapper", "listAnnotations", ("ns",)),
    ApiUse("FileAnnotationWrapper", _GW, None, "FileAnnotationWrapper"),
    ApiUse("MapAnnotationWrapper", _GW, None, "MapAnnotationWrapper"),
    ApiUse("setNs", _GW, "AnnotationWrapper", "setNs"),
    ApiUse("getNs", _GW, "AnnotationWrapper", "getNs"),
    ApiUse("setFile", _GW, "FileAnnotationWrapper", "setFile"),
    ApiUse("getFile", _GW, "FileAnnotationWrapper", "getFile"),
    ApiUse("getFileName", _GW, "FileAnnotationWrapper", "getFileName"),
    ApiUse("getFileSize", _GW, "FileAnnotationWrapper", "getFileSize"),
    ApiUse("getFileInChunks", _GW, "FileAnnotationWrapper", "getFileInChunks"),
    ApiUse("getPath", "omero_model_OriginalFileI.py", "OriginalFileI", "getPath"),
    ApiUse("getMimetype", "omero_model_OriginalFileI.py", "OriginalFileI", "getMimetype"),
    ApiUse("setValue", _GW, "MapAnnotationWrapper", "setValue"),
    ApiUse("getValue", _GW, "MapAnnotationWrapper", "getValue"),
    ApiUse("save", _GW, "BlitzObjectWrapper", "save"),
)

#: Object types passed to ``getObject``; each must be a key of omero-py's KNOWN_WRAPPERS.
OMERO_OBJECT_TYPES = ("Plate", "Well", "Image", "Annotation", "FileAnnotation")

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
        """See `OmeroAdapter.user`."""
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
        """See `OmeroAdapter.connect`; serialised with the other calls."""
        with self._lock:
            self._connection()

    def close(self) -> None:
        """See `OmeroAdapter.close`."""
        with self._lock:
            self._drop()

    # -- plate tree and pixels --------------------------------------------------------------

    def get_plate(self, plate_id: int) -> PlateInfo:
        """See `OmeroAdapter.get_plate`."""
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
        """See `OmeroAdapter.read_plane`; reads the primary Pixels."""
        with self._session(f"reading plane z={z} c={c} t={t} of image {image_id}") as conn:
            image = self._get(conn, "Image", image_id)
            return np.asarray(image.getPrimaryPixels().getPlane(z, c, t))

    # -- annotations ------------------------------------------------------------------------

    def upload_file_annotation(
        self, target: AnnotationTarget, data: bytes, path: str, name: str, ns: str, mimetype: str
    ) -> int:
        """See `OmeroAdapter.upload_file_annotation`; created in the target's group."""
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
        """See `OmeroAdapter.link_annotation`."""
        with self._session(f"linking annotation {annotation_id} to {target[0]}") as conn:
            obj = self._get(conn, *target)
            obj.linkAnnotation(self._get(conn, "Annotation", annotation_id))

    def list_file_annotations(
        self, target: AnnotationTarget, ns: str | None = None
    ) -> list[FileAnnotationInfo]:
        """See `OmeroAdapter.list_file_annotations`."""
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
        """See `OmeroAdapter.download_file_annotation`; read in chunks."""
        with self._session(f"downloading annotation {annotation_id}") as conn:
            ann = self._get(conn, "FileAnnotation", annotation_id)
            return b"".join(ann.getFileInChunks())

    def delete_annotation(self, annotation_id: int) -> None:
        """See `OmeroAdapter.delete_annotation`."""
        with self._session(f"deleting annotation {annotation_id}") as conn:
            conn.deleteObjects("Annotation", [annotation_id], wait=True)

    def get_map_annotation(self, target: AnnotationTarget, ns: str) -> dict[str, str] | None:
        """See `OmeroAdapter.get_map_annotation`."""
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
        """See `OmeroAdapter.set_map_annotation`."""
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
