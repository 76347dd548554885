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
from collections.abc import Iterator
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
    """An output could not be written (disk full, read-only, no permission). Not retried."""


def fs_for(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(filesystem, path) for a URL; storage options apply to remote filesystems only.

    A ``credentials_block`` option is resolved here, in the process doing the I/O (`stores`).
    """
    from prefect_hcs.runtime.stores import fsspec_options

    return fsspec.core.url_to_fs(url, **fsspec_options(url, storage_options))


def read_source_plane(
    url: str,
    storage_options: dict[str, Any] | None = None,
    expect_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Pixels of one source plane; a TIFF header disagreeing with `expect_shape` is refused."""
    fs, path = fs_for(url, storage_options)
    reader = getattr(fs, "read_plane_array", None)
    if reader is not None:
        return np.asarray(reader(path))
    return read_tiff(fs, path, expect_shape)


def write_bytes(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write a whole file atomically (temporary name + rename where renaming exists)."""
    fs, path = fs_for(url, storage_options)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    with write_errors(url, len(data)):
        if parent and not any(p in _OBJECT_STORES for p in protocols):
            fs.makedirs(parent, exist_ok=True)
        if any(p in _NO_RENAME for p in protocols):
            fs.pipe_file(path, data)
            return
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            fs.pipe_file(tmp, data)
            fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                if fs.exists(tmp):
                    fs.rm(tmp)
            raise


#: errno values that mean "this output location cannot take the write": the user must act.
_SPACE = (errno.ENOSPC, errno.EDQUOT)
_ACCESS = (errno.EACCES, errno.EPERM, errno.EROFS)


def output_write_error(exc: BaseException, url: str, nbytes: int | None = None) -> Exception | None:
    """The clear OutputWriteError for a full or read-only output, or None for anything else."""
    err = exc
    for _ in range(5):  # zarr and fsspec may wrap the OSError
        if isinstance(err, OutputWriteError):
            return err
        if isinstance(err, OSError) and err.errno in _SPACE + _ACCESS:
            break
        nxt = err.__cause__ or err.__context__
        if nxt is None:
            return None
        err = nxt
    else:
        return None
    size = f" ({nbytes:,} bytes)" if nbytes is not None else ""
    if err.errno in _SPACE:
        return OutputWriteError(
            f"cannot write {url}: {err.strerror or 'no space left on device'}{size}. Nothing "
            "partial was left; free space on that filesystem (or set "
            "path_planning_config.global_output_folder elsewhere) and retry the plate."
        )
    return OutputWriteError(
        f"cannot write {url}: {err.strerror or 'permission denied'}. Nothing partial was left; "
        "make the output folder writable for this user (or set "
        "path_planning_config.global_output_folder to a writable place) and retry the plate."
    )


@contextlib.contextmanager
def write_errors(url: str, nbytes: int | None = None) -> Iterator[None]:
    """Turn 'disk full' and 'permission denied' while writing `url` into OutputWriteError."""
    try:
        yield
    except OutputWriteError:
        raise
    except Exception as exc:
        clear = output_write_error(exc, url, nbytes)
        if clear is None:
            raise
        raise clear from exc


def is_local(fs: Any) -> bool:
    """True for the local filesystem (where rename and hard links are atomic)."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """A whole file's bytes; ``storage_options`` may name a credentials block (resolved here)."""
    fs, path = fs_for(url, storage_options)
    return fs.cat_file(path)


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether the URL exists, with the same options as `read_bytes`."""
    fs, path = fs_for(url, storage_options)
    return bool(fs.exists(path))


def delete(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Remove a file if it exists (idempotent, so a retried cleanup does not fail)."""
    fs, path = fs_for(url, storage_options)
    if fs.exists(path):
        fs.rm(path)


def array_to_npy(array: np.ndarray) -> bytes:
    """An array as .npy bytes (no pickles: intermediates must not execute code when read)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_to_array(data: bytes) -> np.ndarray:
    """The inverse of `array_to_npy`; refuses pickled object arrays."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def array_to_tiff(array: np.ndarray, axes: str) -> bytes:
    """A TIFF holding an N-D array (tifffile's shaped metadata keeps the shape and axes)."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, metadata={"axes": axes})
    return buf.getvalue()


def tiff_to_array(data: bytes) -> np.ndarray:
    """Pixels of TIFF bytes, as tifffile reads them."""
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
    """Rows of a CSV written by `rows_to_csv` (all values as strings)."""
    return list(csv.DictReader(io.StringIO(data.decode())))
