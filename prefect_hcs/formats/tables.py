"""Object tables inside the OME-Zarr plate, as Parquet: one file per well and one per plate.

Layout (documented in docs/pipelines.md, "Objects, labels and tables")::

    <plate>.ome.zarr/tables/<name>/<row><col>.parquet   one well's rows
    <plate>.ome.zarr/tables/<name>.parquet              all wells, in well order

Zarr readers ignore non-Zarr files, so the plate stays a valid NGFF plate; any Parquet reader
opens a table in one call (``pandas.read_parquet(url)``; `read_table` does the same through
fsspec). Files are written under a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["merge_well_tables", "read_table", "table_url", "write_table"]


def table_url(plate_url: str, name: str, well: str | None = None) -> str:
    """Where table ``name`` of one well (or of the whole plate when ``well`` is None) lives."""
    base = f"{plate_url.rstrip('/')}/tables/{name}"
    return f"{base}/{well}.parquet" if well else f"{base}.parquet"


def _atomic_write(url: str, data: bytes, storage_options: Mapping[str, Any] | None) -> None:
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open(tmp, "wb") as fh:
        fh.write(data)
    fs.mv(tmp, path)


def _to_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> pa.Table:
    if not rows:
        return pa.table({c: pa.array([], pa.null()) for c in columns or ()})
    names = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    return pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])


def write_table(
    url: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Write ``rows`` (dicts; missing keys become nulls) as a Parquet file; return the row count."""
    buf = io.BytesIO()
    pq.write_table(_to_table(rows, columns), buf, compression="zstd")
    _atomic_write(url, buf.getvalue(), storage_options)
    return len(rows)


def read_table(url: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """One table as a pyarrow Table (``.to_pandas()`` / ``.to_pylist()`` for the rows)."""
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh)


def merge_well_tables(
    plate_url: str,
    name: str,
    wells: Iterable[str],
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Concatenate the per-well files of ``name`` (in the given well order) into the plate file;
    wells without a file contribute no rows. Returns the plate table's row count."""
    fs, _ = fsspec.core.url_to_fs(plate_url, **dict(storage_options or {}))
    tables = []
    for well in wells:
        url = table_url(plate_url, name, well)
        if fs.exists(fsspec.core.url_to_fs(url)[1]):
            tables.append(read_table(url, storage_options))
    merged = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
    buf = io.BytesIO()
    pq.write_table(merged, buf, compression="zstd")
    _atomic_write(table_url(plate_url, name), buf.getvalue(), storage_options)
    return merged.num_rows
