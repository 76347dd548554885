"""The ``omero`` fsspec filesystem: OMERO plates as virtual paths, outputs as FileAnnotations.

Path scheme (see `prefect_hcs.storage.omero_paths` and docs/omero.md)::

    omero://plate_<id>/<well>/s<site>/<well>_s<site>_w<c>_z<z>_t<t>.tif   a plane (read-only TIFF)
    omero://plate_<id>/outputs/<sub_dir>/<file>                     FileAnnotation on the Plate
    omero://plate_<id>/<well>/outputs/<sub_dir>/<file>              FileAnnotation on the Well
    omero://plate_<id>/<well>/s<site>/outputs/<sub_dir>/<file>      FileAnnotation on the Image

Nothing here touches the local disk: plates, wells, sites and output folders are virtual, so
``mkdir``/``makedirs`` only validate the path (the seed bug was a ``mkdir /omero/...`` on a worker).
Closing a written file uploads one FileAnnotation (namespace `OUTPUT_NS`, OriginalFile path =
the sub-folder, name = the file name) and links it to the object the path names; an older
annotation of the same path, name and namespace is deleted only after the new one is linked.

Storage options (JSON-able, so they cross process boundaries; pick one connection source)::

    {"credentials_block": "my-omero"}                      an OmeroCredentials block (the usual way)
    {"host": "omero.example.org", "user": "alice", "group": "lab"}   a login without a password
    {"credentials": OmeroLogin(...) or OmeroCredentials(...)}  or  {"gateway": <OmeroAdapter>}
                                                           (in-process only)

Logins become adapters through `prefect_hcs.storage.omero_login` (where tests and the demo install
the OMERO stand-in; a configuration value alone never reaches it). plus ``retries`` (transient errors, default 3) and ``retry_delay`` (seconds). Extra keyword
arguments (zarr passes ``asynchronous=True``) are accepted and ignored. fsspec caches one instance
per argument set and thread, so connections live in a per-process registry keyed by the connection
options (never by instance): every instance with the same options shares one session.
"""

from __future__ import annotations

import contextlib
import io
import mimetypes
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import tifffile
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from pydantic import SecretStr

from prefect_hcs.formats.layout import well_id
from prefect_hcs.storage.omero_errors import OmeroConnectionError
from prefect_hcs.storage.omero_gateway import (
    AnnotationTarget,
    FileAnnotationInfo,
    ImageInfo,
    OmeroAdapter,
    PlateInfo,
    WellInfo,
)
from prefect_hcs.storage.omero_login import (
    DEFAULT_PORT,
    OmeroLogin,
    gateway_factory,
    login_from_block,
)
from prefect_hcs.storage.omero_paths import (
    OUTPUT_NS,
    OUTPUTS,
    PLATE_NS,
    PROTOCOL,
    OmeroPath,
    outputs_root,
    parse,
    plane_path,
    plate_path,
    site_path,
    split_rel,
    strip,
    well_path,
)

T = TypeVar("T")


@dataclass
class _Session:
    """One adapter and what was learnt through it (plate trees do not change during a run)."""

    adapter: OmeroAdapter
    plates: dict[int, PlateInfo] = field(default_factory=dict)


_SESSIONS: dict[tuple[int, str], _Session] = {}
_SESSIONS_LOCK = threading.Lock()


def _as_login(credentials: Any) -> OmeroLogin:
    """An `OmeroLogin`, or an object that makes one (the `OmeroCredentials` block's ``login()``)."""
    return credentials if isinstance(credentials, OmeroLogin) else credentials.login()


class OmeroFileSystem(AbstractFileSystem):
    """fsspec filesystem for ``omero://`` URLs (see the module docstring for the scheme)."""

    protocol = (PROTOCOL,)
    root_marker = ""
    async_impl = False

    def __init__(
        self,
        *,
        credentials_block: str | None = None,
        credentials: Any = None,
        host: str | None = None,
        user: str | None = None,
        password: str | None = None,
        group: str | None = None,
        port: int = DEFAULT_PORT,
        secure: bool = True,
        gateway: OmeroAdapter | None = None,
        retries: int = 3,
        retry_delay: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        sources = [credentials_block, credentials, host, gateway]
        if sum(s is not None for s in sources) != 1:
            raise ValueError(
                "the omero filesystem needs exactly one connection source in its storage options: "
                "credentials_block='<block name>' (an OmeroCredentials block), host='<server>' "
                "with user='<name>', credentials=<OmeroLogin or OmeroCredentials>, or "
                "gateway=<adapter>"
            )
        if host is not None and not user:
            raise ValueError("an omero login by host needs user='<name>' in the storage options")
        self._credentials_block = credentials_block
        if host is not None:
            secret = SecretStr(password) if password is not None else None
            credentials = OmeroLogin(host, str(user), secret, port, group, secure)
        self._login: OmeroLogin | None = _as_login(credentials) if credentials else None
        self._gateway = gateway
        self._own_session = _Session(gateway) if gateway is not None else None
        self.retries = retries
        self.retry_delay = retry_delay

    def __repr__(self) -> str:
        return f"OmeroFileSystem({self._describe()})"

    def _describe(self) -> str:
        if self._credentials_block is not None:
            return f"credentials block {self._credentials_block!r}"
        if self._login is not None:
            return self._login.describe()
        return repr(self._gateway)

    # -- connection ---------------------------------------------------------------------------

    def _key(self) -> str:
        if self._credentials_block is not None:
            return f"block|{id(gateway_factory())}|{self._credentials_block}"
        assert self._login is not None
        return f"login|{self._login.key()}"

    def _make_adapter(self) -> OmeroAdapter:
        login = self._login
        if login is None:
            assert self._credentials_block is not None
            login = login_from_block(self._credentials_block)
        return login.adapter()

    def _session(self) -> _Session:
        if self._own_session is not None:
            return self._own_session
        key = (os.getpid(), self._key())
        with _SESSIONS_LOCK:
            session = _SESSIONS.get(key)
            if session is None:
                session = _SESSIONS[key] = _Session(self._make_adapter())
        return session

    @property
    def adapter(self) -> OmeroAdapter:
        """The gateway adapter this filesystem talks through (shared per process)."""
        return self._session().adapter

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call an adapter method, retrying transient connection errors with backoff."""
        for attempt in range(self.retries + 1):
            try:
                return fn(*args)
            except OmeroConnectionError as exc:
                if attempt >= self.retries:
                    raise OmeroConnectionError(
                        f"{exc} (gave up after {attempt + 1} attempts)"
                    ) from exc
                time.sleep(self.retry_delay * 2**attempt)
        raise AssertionError("unreachable")

    # -- plate tree ---------------------------------------------------------------------------

    def plate(self, plate_id: int) -> PlateInfo:
        """The plate's tree (cached per process: a plate's wells and images do not change)."""
        session = self._session()
        if plate_id not in session.plates:
            session.plates[plate_id] = self._call(session.adapter.get_plate, plate_id)
        return session.plates[plate_id]

    def plate_map(self, plate_id: int, ns: str = PLATE_NS) -> dict[str, str]:
        """The plate's MapAnnotation of namespace `ns` as a dict ({} when it has none)."""
        return self._call(self.adapter.get_map_annotation, ("Plate", plate_id), ns) or {}

    def _well(self, p: OmeroPath) -> WellInfo:
        for well in self.plate(p.plate_id).wells:
            if well_id(well.row, well.column) == p.well:
                return well
        raise FileNotFoundError(
            f"omero://{strip(well_path(p.plate_id, p.well or ''))}: no such well"
        )

    def _image(self, p: OmeroPath) -> ImageInfo:
        well = self._well(p)
        assert p.site is not None
        if p.site > len(well.images):
            where = site_path(p.plate_id, well_id(well.row, well.column), p.site)
            raise FileNotFoundError(f"omero://{where}: well has {len(well.images)} sites")
        return well.images[p.site - 1]

    def _target(self, p: OmeroPath) -> AnnotationTarget:
        """The OMERO object an outputs path annotates (checked to exist)."""
        level = p.target[0]
        if level == "image":
            return ("Image", self._image(p).image_id)
        if level == "well":
            return ("Well", self._well(p).well_id)
        self.plate(p.plate_id)
        return ("Plate", p.plate_id)

    def _plane(self, p: OmeroPath) -> ImageInfo:
        image = self._image(p)
        assert p.channel is not None and p.z is not None and p.timepoint is not None
        if p.channel > image.size_c or p.z > image.size_z or p.timepoint > image.size_t:
            raise FileNotFoundError(
                f"omero://{plane_path(p.plate_id, p.well or '', p.site or 0, p.channel, p.z, p.timepoint)}"
                f": image {image.image_id} has C={image.size_c}, Z={image.size_z}, T={image.size_t}"
            )
        return image

    # -- outputs (FileAnnotations) ------------------------------------------------------------

    def _annotations(self, p: OmeroPath) -> dict[str, FileAnnotationInfo]:
        """{path below outputs/: annotation} of the object `p` names; the newest wins."""
        target = self._target(p)
        anns = self._call(self.adapter.list_file_annotations, target, OUTPUT_NS)
        out: dict[str, FileAnnotationInfo] = {}
        for ann in sorted(anns, key=lambda a: a.annotation_id):
            out[f"{ann.path}/{ann.name}" if ann.path else ann.name] = ann
        return out

    def _commit(self, path: str, data: bytes, exclusive: bool = False) -> None:
        """Upload `data` as one FileAnnotation; replace older ones only after the new is linked."""
        p = self._writable(path)
        target = self._target(p)
        folder, name = split_rel(p.rel)
        anns = self._call(self.adapter.list_file_annotations, target, OUTPUT_NS)
        old = [a for a in anns if (a.path.strip("/"), a.name) == (folder, name)]
        if exclusive and old:
            raise FileExistsError(f"omero://{path} already exists")
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        ann_id = self._call(
            self.adapter.upload_file_annotation, target, data, folder, name, OUTPUT_NS, mimetype
        )
        try:
            self._call(self.adapter.link_annotation, target, ann_id)
        except BaseException:
            with contextlib.suppress(Exception):
                self.adapter.delete_annotation(ann_id)  # do not leave an orphan behind
            raise
        for ann in old:
            self._call(self.adapter.delete_annotation, ann.annotation_id)

    def _writable(self, path: str) -> OmeroPath:
        p = parse(path)
        if p.kind != "outputs" or not p.rel:
            raise PermissionError(
                f"omero://{strip(path)} is read-only: only files below an outputs folder "
                "(omero://plate_<id>[/<well>[/s<site>]]/outputs/...) can be written"
            )
        return p

    # -- fsspec API ---------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return strip(str(path))

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """No-op: OMERO folders are virtual. The path is still checked against the scheme."""
        parse(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """No-op (never touches a local disk); the path is checked against the scheme."""
        parse(path)

    def rmdir(self, path: str) -> None:
        """No-op: folders are virtual (the path is still checked against the scheme)."""
        parse(path)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """fsspec info: plate/well/site folders, planes as TIFF files, outputs as annotations."""
        path = strip(path)
        p = parse(path)
        if p.kind == "plate":
            self.plate(p.plate_id)
            return _dir(path)
        if p.kind == "well":
            self._well(p)
            return _dir(path)
        if p.kind == "site":
            image = self._image(p)
            return _dir(path, image_id=image.image_id)
        if p.kind == "plane":
            image = self._plane(p)
            size = _tiff_size(image.size_y, image.size_x, image.dtype)
            return {"name": path, "size": size, "type": "file", "image_id": image.image_id}
        anns = self._annotations(p)
        if not p.rel:
            return _dir(path)
        if p.rel in anns:
            return _file(path, anns[p.rel])
        if any(key.startswith(p.rel + "/") for key in anns):
            return _dir(path)
        raise FileNotFoundError(f"omero://{path}")

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """fsspec listing of a plate, well, site or outputs folder."""
        path = strip(path)
        p = parse(path)
        entries: list[dict[str, Any]]
        if p.kind == "plate":
            plate = self.plate(p.plate_id)
            entries = [_dir(well_path(p.plate_id, well_id(w.row, w.column))) for w in plate.wells]
            entries.append(_dir(f"{plate_path(p.plate_id)}/{OUTPUTS}"))
        elif p.kind == "well":
            well = self._well(p)
            assert p.well is not None
            entries = [
                _dir(site_path(p.plate_id, p.well, i + 1), image_id=img.image_id)
                for i, img in enumerate(well.images)
            ]
            entries.append(_dir(f"{well_path(p.plate_id, p.well)}/{OUTPUTS}"))
        elif p.kind == "site":
            image = self._image(p)
            assert p.well is not None and p.site is not None
            size = _tiff_size(image.size_y, image.size_x, image.dtype)
            entries = [
                {
                    "name": plane_path(p.plate_id, p.well, p.site, c, z, t),
                    "size": size,
                    "type": "file",
                    "image_id": image.image_id,
                }
                for c in range(1, image.size_c + 1)
                for z in range(1, image.size_z + 1)
                for t in range(1, image.size_t + 1)
            ]
            entries.append(_dir(f"{site_path(p.plate_id, p.well, p.site)}/{OUTPUTS}"))
        elif p.kind == "plane":
            entries = [self.info(path)]
        else:
            entries = self._ls_outputs(path, p)
        return entries if detail else [e["name"] for e in entries]

    def _ls_outputs(self, path: str, p: OmeroPath) -> list[dict[str, Any]]:
        anns = self._annotations(p)
        if p.rel in anns:
            return [_file(path, anns[p.rel])]
        root = outputs_root(p)
        prefix = f"{p.rel}/" if p.rel else ""
        files: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for key, ann in anns.items():
            if not key.startswith(prefix):
                continue
            head, sep, _ = key[len(prefix) :].partition("/")
            if sep:
                dirs.add(head)
            else:
                files.append(_file(f"{root}/{key}", ann))
        if p.rel and not files and not dirs:
            raise FileNotFoundError(f"omero://{path}")
        base = f"{root}/{prefix}"
        return [_dir(f"{base}{d}") for d in sorted(dirs)] + sorted(files, key=lambda e: e["name"])

    def exists(self, path: str, **kwargs: Any) -> bool:
        """Whether the path names a plate object, plane or output annotation."""
        try:
            self.info(path)
        except (FileNotFoundError, ValueError):
            return False
        return True

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """A plane as TIFF bytes (encoded from OMERO's pixels) or an output annotation's content."""
        path = strip(path)
        p = parse(path)
        if p.kind == "plane":
            data = _encode_tiff(self.read_plane_array(path))
        elif p.kind == "outputs" and p.rel:
            anns = self._annotations(p)
            if p.rel not in anns:
                if self.isdir(path):
                    raise IsADirectoryError(f"omero://{path}")
                raise FileNotFoundError(f"omero://{path}")
            data = self._call(self.adapter.download_file_annotation, anns[p.rel].annotation_id)
        else:
            raise IsADirectoryError(f"omero://{path} is a virtual folder, not a file")
        return data[start:end] if (start is not None or end is not None) else data

    def read_plane_array(self, path: str) -> np.ndarray:
        """The plane's pixels as a 2-D array, without a TIFF round trip (for plate readers)."""
        p = parse(path)
        if p.kind != "plane":
            raise ValueError(f"omero://{strip(path)} is not a plane path")
        image = self._plane(p)
        assert p.z is not None and p.channel is not None and p.timepoint is not None
        return self._call(
            self.adapter.read_plane, image.image_id, p.z - 1, p.channel - 1, p.timepoint - 1
        )

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Write an output as a file annotation; ``mode='create'`` fails if it exists."""
        self._commit(strip(path), bytes(value), exclusive=mode == "create")

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy an output file (folders are virtual: copying one creates nothing)."""
        path1, path2 = strip(path1), strip(path2)
        if self.isdir(path1):
            return  # folders are virtual: copying one creates nothing
        self._commit(path2, self.cat_file(path1))

    def rm_file(self, path: str) -> None:
        """Delete an output annotation; plate objects and pixels are read-only."""
        path = strip(path)
        p = parse(path)
        if p.kind != "outputs":
            raise PermissionError(f"omero://{path} is read-only (OMERO plates are not deleted)")
        anns = self._annotations(p)
        doomed = [a for key, a in anns.items() if key == p.rel] if p.rel else []
        if not doomed:
            if not p.rel or any(key.startswith(p.rel + "/") for key in anns):
                return  # a virtual folder: nothing to delete
            raise FileNotFoundError(f"omero://{path}")
        for ann in doomed:
            self._call(self.adapter.delete_annotation, ann.annotation_id)

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """fsspec rm over outputs only: planes raise PermissionError, plate folders are kept."""
        paths = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        for p in reversed(paths):
            kind = parse(p).kind
            if kind == "plane":
                raise PermissionError(f"omero://{p} is read-only (OMERO pixels are not deleted)")
            if kind != "outputs":
                continue  # plate, well and site folders are OMERO objects: never deleted
            folder = any(q.startswith(p.rstrip("/") + "/") for q in paths)
            try:
                self.rm_file(p)
            except FileNotFoundError:
                if not folder:
                    raise  # a virtual folder vanishes with its last file; a file must exist

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> OmeroFile:
        path = strip(path)
        if mode == "rb":
            info = self.info(path)
            if info["type"] != "file":
                raise IsADirectoryError(f"omero://{path} is a folder")
            return OmeroFile(self, path, mode, size=info["size"], cache_type="all")
        if mode not in ("wb", "xb"):
            raise NotImplementedError(
                f"mode {mode!r} is not supported on omero://: FileAnnotations are written whole "
                "('wb', or 'xb' to fail if the file exists)"
            )
        p = self._writable(path)
        if mode == "xb" and p.rel in self._annotations(p):
            raise FileExistsError(f"omero://{path} already exists")
        return OmeroFile(
            self, path, mode, block_size=block_size or "default", autocommit=autocommit
        )

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget cached plate trees (annotations are never cached)."""
        if path is None:
            self._session().plates.clear()


class OmeroFile(AbstractBufferedFile):
    """A buffered file: reads fetch the whole plane/annotation once; writes upload on close."""

    fs: OmeroFileSystem

    def _initiate_upload(self) -> None:
        self._parts: list[bytes] = []

    def _upload_chunk(self, final: bool = False) -> bool:
        self._parts.append(self.buffer.getvalue())
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Upload the buffered content as one annotation (the write is atomic on close)."""
        self.fs._commit(self.path, b"".join(self._parts), exclusive=self.mode == "xb")

    def discard(self) -> None:
        """Drop the buffered content without uploading."""
        self._parts = []

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start, end)

    def __exit__(self, exc_type: Any, *args: Any) -> None:
        if exc_type is not None and self.mode != "rb":
            self.discard()
            self.forced, self.closed = True, True  # an exception mid-write uploads nothing
            return
        self.close()


def _dir(path: str, **extra: Any) -> dict[str, Any]:
    return {"name": path, "size": 0, "type": "directory", **extra}


def _file(path: str, ann: FileAnnotationInfo) -> dict[str, Any]:
    return {
        "name": path,
        "size": ann.size,
        "type": "file",
        "annotation_id": ann.annotation_id,
        "mimetype": ann.mimetype,
    }


def _encode_tiff(plane: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, plane, photometric="minisblack", metadata=None)
    return buf.getvalue()


_TIFF_SIZES: dict[tuple[int, int, str], int] = {}


def _tiff_size(size_y: int, size_x: int, dtype: str) -> int:
    """Byte size of a plane's uncompressed TIFF (header size depends only on shape and dtype)."""
    key = (size_y, size_x, dtype)
    if key not in _TIFF_SIZES:
        _TIFF_SIZES[key] = len(_encode_tiff(np.zeros((size_y, size_x), dtype=dtype)))
    return _TIFF_SIZES[key]
