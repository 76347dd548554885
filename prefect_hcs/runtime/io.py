"""Reading and writing what step plans name, through fsspec. No Prefect here.

Writes are atomic where the filesystem allows: files are written under a temporary name in the
same folder and renamed; on `memory://` and `omero://` a single `pipe` is already all-or-nothing
(the OMERO filesystem uploads, then replaces).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import uuid
from typing import Any

import fsspec
import numpy as np
import tifffile

from prefect_hcs.errors import UserFacingError
from prefect_hcs.formats.detect import read_tiff

# Object stores have no folders to create, a single PUT is already all-or-nothing, and "rename"
# there is a copy plus a delete (twice the traffic, and not atomic): write those directly.
_OBJECT_STORES = ("s3", "s3a", "gcs", "gs", "abfs", "az")
_NO_RENAME = ("memory", "omero", *_OBJECT_STORES)


class OutputWriteError(UserFacingError, OSError):
    """An output could not be written (e.g. disk full). Deterministic: not retried."""


def fs_for(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(filesystem, path) for a URL; storage options apply to remote filesystems only.

    A ``credentials_block`` option is resolved here, in the process doing the I/O (`stores`).
    """
    from prefect_hcs.runtime.stores import fsspec_options

    return fsspec.core.url_to_fs(url, **fsspec_options(url, storage_options))


def read_source_plane(url: str, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    fs, path = fs_for(url, storage_options)
    reader = getattr(fs, "read_plane_array", None)
    if reader is not None:
        return np.asarray(reader(path))
    return read_tiff(fs, path)


def write_bytes(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write a whole file atomically (temporary name + rename where renaming exists)."""
    fs, path = fs_for(url, storage_options)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent and not any(p in _OBJECT_STORES for p in protocols):
        fs.makedirs(parent, exist_ok=True)
    if any(p in _NO_RENAME for p in protocols):
        fs.pipe_file(path, data)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        fs.pipe_file(tmp, data)
        fs.mv(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            if fs.exists(tmp):
                fs.rm(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputWriteError(
                f"cannot write {url}: {exc.strerror or 'no space left'} ({len(data):,} bytes). "
                "Nothing partial was left; free space on that filesystem (or set "
                "path_planning_config.global_output_folder elsewhere) and retry the plate."
            ) from exc
        raise


def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    fs, path = fs_for(url, storage_options)
    return fs.cat_file(path)


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = fs_for(url, storage_options)
    return bool(fs.exists(path))


def delete(url: str, storage_options: dict[str, Any] | None = None) -> None:
    fs, path = fs_for(url, storage_options)
    if fs.exists(path):
        fs.rm(path)


def array_to_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_to_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def array_to_tiff(array: np.ndarray, axes: str) -> bytes:
    """A TIFF holding an N-D array (tifffile's shaped metadata keeps the shape and axes)."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, metadata={"axes": axes})
    return buf.getvalue()


def tiff_to_array(data: bytes) -> np.ndarray:
    return tifffile.imread(io.BytesIO(data))


def rows_to_csv(rows: list[dict[str, Any]]) -> bytes:
    """CSV with the union of the rows' keys as columns (stable order of first appearance)."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return buf.getvalue().encode()


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, np.generic):
        return _csv_value(value.item())
    return value


def csv_to_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))
