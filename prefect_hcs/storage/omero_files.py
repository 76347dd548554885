"""Files of the ``omero`` filesystem: buffered reads and whole-file uploads, listing entries.

A written file exists only once it is closed: `OmeroFile` keeps the bytes and uploads them as one
FileAnnotation on close (an exception inside ``with`` uploads nothing). Planes read as
uncompressed TIFFs, whose size is known from the image's shape and pixel type alone.
"""

from __future__ import annotations

import io
from typing import Any, Protocol

import numpy as np
import tifffile
from fsspec.spec import AbstractBufferedFile

from prefect_hcs.storage.omero_gateway import FileAnnotationInfo


class _Annotations(Protocol):
    """What an `OmeroFile` needs from its filesystem (`omero_fs.OmeroFileSystem`)."""

    def _commit(self, path: str, data: bytes, exclusive: bool = False) -> None: ...

    def cat_file(self, path: str, start: int | None = None, end: int | None = None) -> bytes: ...


__all__ = ["OmeroFile", "dir_entry", "encode_tiff", "file_entry", "tiff_size"]


class OmeroFile(AbstractBufferedFile):
    """A buffered file: reads fetch the whole plane/annotation once; writes upload on close."""

    fs: _Annotations

    def _initiate_upload(self) -> None:
        self._parts: list[bytes] = []

    def _upload_chunk(self, final: bool = False) -> bool:
        self._parts.append(self.buffer.getvalue())
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Upload the whole file as one FileAnnotation (replacing an older one of the path)."""
        self.fs._commit(self.path, b"".join(self._parts), exclusive=self.mode == "xb")

    def discard(self) -> None:
        """Drop what was written: nothing reaches OMERO."""
        self._parts = []

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start, end)

    def __exit__(self, exc_type: Any, *args: Any) -> None:
        if exc_type is not None and self.mode != "rb":
            self.discard()
            self.forced, self.closed = True, True  # an exception mid-write uploads nothing
            return
        self.close()


def dir_entry(path: str, **extra: Any) -> dict[str, Any]:
    """An fsspec ``info``/``ls`` entry for a (virtual) folder."""
    return {"name": path, "size": 0, "type": "directory", **extra}


def file_entry(path: str, ann: FileAnnotationInfo) -> dict[str, Any]:
    """An fsspec ``info``/``ls`` entry for a FileAnnotation (its id and mimetype included)."""
    return {
        "name": path,
        "size": ann.size,
        "type": "file",
        "annotation_id": ann.annotation_id,
        "mimetype": ann.mimetype,
    }


def encode_tiff(plane: np.ndarray) -> bytes:
    """A plane as an uncompressed single-page TIFF (how planes read through the filesystem)."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, plane, photometric="minisblack", metadata=None)
    return buf.getvalue()


_TIFF_SIZES: dict[tuple[int, int, str], int] = {}


def tiff_size(size_y: int, size_x: int, dtype: str) -> int:
    """Byte size of a plane's uncompressed TIFF (header size depends only on shape and dtype)."""
    key = (size_y, size_x, dtype)
    if key not in _TIFF_SIZES:
        _TIFF_SIZES[key] = len(encode_tiff(np.zeros((size_y, size_x), dtype=dtype)))
    return _TIFF_SIZES[key]
