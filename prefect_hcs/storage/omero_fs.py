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

Storage options pick one connection source (`omero_session`): ``credentials_block`` (the
usual way), ``host`` + ``user`` (+ ``group``), or in-process ``credentials``/``gateway``; plus
``retries`` (transient errors, default 3) and ``retry_delay`` (seconds). Extra keyword arguments
(zarr passes ``asynchronous=True``) are accepted and ignored. Files: `omero_files`.

Over 400 lines because it is one fsspec ``AbstractFileSystem`` whose methods are fsspec's
interface; what is not (the connection, the file objects) lives in the two modules above.
"""

from __future__ import annotations

import contextlib
import mimetypes
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from fsspec.spec import AbstractFileSystem

from prefect_hcs.formats.wells import well_id
from prefect_hcs.storage.omero_files import OmeroFile, dir_entry, encode_tiff, file_entry, tiff_size
from prefect_hcs.storage.omero_gateway import (
    AnnotationTarget,
    FileAnnotationInfo,
    ImageInfo,
    OmeroAdapter,
    PlateInfo,
    WellInfo,
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
from prefect_hcs.storage.omero_session import ConnectionOptions, OmeroConnection, Session

T = TypeVar("T")


class OmeroFileSystem(AbstractFileSystem):
    """fsspec filesystem for ``omero://`` URLs (see the module docstring for the scheme)."""

    protocol = (PROTOCOL,)
    root_marker = ""
    async_impl = False

    def __init__(self, *, retries: int = 3, retry_delay: float = 0.2, **kwargs: Any) -> None:
        """Connect through exactly one source, lazily, on first use.

        The connection keyword arguments are the fields of `ConnectionOptions`
        (``credentials_block``, ``host``/``user``/``password``/``group``/``port``/``secure``,
        ``credentials``, ``gateway``); the others go to fsspec, which ignores what it does not use.

        Raises:
            ValueError: no connection source or several, or a host without a user.
        """
        options, rest = ConnectionOptions.split(kwargs)
        super().__init__(**rest)
        self._conn = OmeroConnection(options)
        self.retries = retries
        self.retry_delay = retry_delay

    def __repr__(self) -> str:
        return f"OmeroFileSystem({self._conn.describe()})"

    # -- connection ---------------------------------------------------------------------------

    def _session(self) -> Session:
        return self._conn.session()

    @property
    def adapter(self) -> OmeroAdapter:
        """The gateway adapter this filesystem talks through (shared per process)."""
        return self._session().adapter

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call an adapter method, retrying transient connection errors with backoff."""
        return self._conn.call(fn, *args, retries=self.retries, delay=self.retry_delay)

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
        """Folders are virtual: nothing to remove (a folder disappears with its last file)."""
        parse(path)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """fsspec info of a path: planes are files, plates/wells/sites and output folders directories."""
        path = strip(path)
        p = parse(path)
        if p.kind == "plate":
            self.plate(p.plate_id)
            return dir_entry(path)
        if p.kind == "well":
            self._well(p)
            return dir_entry(path)
        if p.kind == "site":
            image = self._image(p)
            return dir_entry(path, image_id=image.image_id)
        if p.kind == "plane":
            image = self._plane(p)
            size = tiff_size(image.size_y, image.size_x, image.dtype)
            return {"name": path, "size": size, "type": "file", "image_id": image.image_id}
        anns = self._annotations(p)
        if not p.rel:
            return dir_entry(path)
        if p.rel in anns:
            return file_entry(path, anns[p.rel])
        if any(key.startswith(p.rel + "/") for key in anns):
            return dir_entry(path)
        raise FileNotFoundError(f"omero://{path}")

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """fsspec listing: wells of a plate, sites of a well, planes of a site, or output files."""
        path = strip(path)
        p = parse(path)
        entries: list[dict[str, Any]]
        if p.kind == "plate":
            plate = self.plate(p.plate_id)
            entries = [
                dir_entry(well_path(p.plate_id, well_id(w.row, w.column))) for w in plate.wells
            ]
            entries.append(dir_entry(f"{plate_path(p.plate_id)}/{OUTPUTS}"))
        elif p.kind == "well":
            well = self._well(p)
            assert p.well is not None
            entries = [
                dir_entry(site_path(p.plate_id, p.well, i + 1), image_id=img.image_id)
                for i, img in enumerate(well.images)
            ]
            entries.append(dir_entry(f"{well_path(p.plate_id, p.well)}/{OUTPUTS}"))
        elif p.kind == "site":
            image = self._image(p)
            assert p.well is not None and p.site is not None
            size = tiff_size(image.size_y, image.size_x, image.dtype)
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
            entries.append(dir_entry(f"{site_path(p.plate_id, p.well, p.site)}/{OUTPUTS}"))
        elif p.kind == "plane":
            entries = [self.info(path)]
        else:
            entries = self._ls_outputs(path, p)
        return entries if detail else [e["name"] for e in entries]

    def _ls_outputs(self, path: str, p: OmeroPath) -> list[dict[str, Any]]:
        anns = self._annotations(p)
        if p.rel in anns:
            return [file_entry(path, anns[p.rel])]
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
                files.append(file_entry(f"{root}/{key}", ann))
        if p.rel and not files and not dirs:
            raise FileNotFoundError(f"omero://{path}")
        base = f"{root}/{prefix}"
        return [dir_entry(f"{base}{d}") for d in sorted(dirs)] + sorted(
            files, key=lambda e: e["name"]
        )

    def exists(self, path: str, **kwargs: Any) -> bool:
        """True if the path names an existing plate object, plane or FileAnnotation."""
        try:
            self.info(path)
        except (FileNotFoundError, ValueError):
            return False
        return True

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """Bytes of a plane (as TIFF) or of a FileAnnotation, optionally a byte range."""
        path = strip(path)
        p = parse(path)
        if p.kind == "plane":
            data = encode_tiff(self.read_plane_array(path))
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
        """Write `value` as one FileAnnotation ('create' refuses an existing file)."""
        self._commit(strip(path), bytes(value), exclusive=mode == "create")

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy a plane or an annotation into an output path (a new FileAnnotation)."""
        path1, path2 = strip(path1), strip(path2)
        if self.isdir(path1):
            return  # folders are virtual: copying one creates nothing
        self._commit(path2, self.cat_file(path1))

    def rm_file(self, path: str) -> None:
        """Delete the FileAnnotation a path names; planes and folders cannot be removed."""
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
        """Delete output files (recursively for a folder of outputs)."""
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
