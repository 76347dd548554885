"""Validate an OME-Zarr HCS plate (NGFF 0.5) with independent validators plus our own checks.

No single validator is enough: ome-zarr-models accepts plates whose listed well or field groups
are missing, and neither it nor yaozarrs checks that rowIndex/columnIndex agree with the well path.
So a plate is checked four ways, and every problem is returned as one readable line prefixed by the
checker that found it:

1. ``yaozarrs:``        metadata models + store structure (missing wells/fields, array dims).
2. ``ome-zarr-models:`` pydantic models of plate/well/image metadata.
3. ``prefect-hcs:``     indices vs paths, groups exist, field_count, pyramid shapes, our status.
4. ``ome-zarr-py:``     the reader napari and friends use must find the plate and every well.

Each validator is used through its public API. ome-zarr-py's `parse_url` opens local paths (and
public http/s3); for any other fsspec URL (memory://, S3 with credentials) the plate's metadata
documents (every ``zarr.json``, no chunks) are mirrored to a temporary folder and read there, so
the reader sees exactly the metadata a viewer would.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zarr

from prefect_hcs.formats.omezarr_store import (
    MARK,
    NGFF_VERSION,
    is_local,
    local_path,
    open_store,
    sync_fs,
)

__all__ = ["ValidationReport", "validate_plate", "validate_plate_report"]


@dataclass
class ValidationReport:
    """Problems make the plate invalid; warnings are SHOULD-level notes and our own status."""

    url: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no checker found a problem (warnings do not count)."""
        return not self.problems


def validate_plate(url: str, storage_options: dict | None = None) -> list[str]:
    """Problems found in the plate at `url` (empty list = valid)."""
    return validate_plate_report(url, storage_options).problems


def validate_plate_report(url: str, storage_options: dict | None = None) -> ValidationReport:
    """Run all four checkers; a crash in one checker is reported as a problem, not raised."""
    report = ValidationReport(url)
    for name, check in (
        ("yaozarrs", _check_yaozarrs),
        ("ome-zarr-models", _check_ome_zarr_models),
        ("prefect-hcs", _check_own),
        ("ome-zarr-py", _check_ome_zarr_reader),
    ):
        try:
            for kind, msg in check(url, storage_options):
                (report.problems if kind == "problem" else report.warnings).append(f"{name}: {msg}")
        except Exception as exc:  # a validator that crashes on the plate is a finding too
            report.problems.append(
                f"{name}: could not check the plate: {type(exc).__name__}: {exc}"
            )
    return report


Finding = tuple[str, str]  # ("problem" | "warning", message)


def _loc(loc: Any) -> str:
    return ".".join(str(p) for p in loc) if loc else "<root>"


# -- 1. yaozarrs -------------------------------------------------------------------------------


def _check_yaozarrs(url: str, storage_options: dict | None) -> Iterator[Finding]:
    import yaozarrs

    opts = dict(storage_options or {})  # a copy: yaozarrs fills in defaults in place
    if url.startswith(("s3://", "s3a://")):
        opts.setdefault("anon", False)  # yaozarrs assumes public buckets; s3fs's default is signed
    group = yaozarrs.open_group(local_path(url) if is_local(url) else url, opts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yaozarrs.validate_zarr_store(group)
        except ValueError as exc:
            # yaozarrs' storage error and pydantic's model error are both ValueErrors listing
            # their errors with the same `errors(include_context=...)` method
            errors = getattr(exc, "errors", None)
            if callable(errors):
                for err in errors(include_context=False):
                    yield "problem", f"{_loc(err.get('loc'))}: {err.get('msg')}"
            else:
                yield "problem", str(exc)
    for w in caught:
        details = getattr(w.message, "warnings", None)  # yaozarrs' StorageValidationWarning
        if callable(details):
            for detail in details(include_context=False):
                yield "warning", f"{_loc(detail.get('loc'))}: {detail.get('msg')}"
        elif issubclass(w.category, UserWarning):
            yield "warning", str(w.message)


# -- 2. ome-zarr-models ------------------------------------------------------------------------


def _check_ome_zarr_models(url: str, storage_options: dict | None) -> Iterator[Finding]:
    import pydantic
    from ome_zarr_models.v05.hcs import HCS

    group = zarr.open_group(store=open_store(url, storage_options, read_only=True), mode="r")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            HCS.from_zarr(group)
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                yield "problem", f"{_loc(err.get('loc'))}: {err.get('msg')}"
        except (ValueError, KeyError, RuntimeError) as exc:
            yield "problem", f"{type(exc).__name__}: {exc}"
    for w in caught:
        if "ome_zarr_models" in str(w.filename) or "ValidationWarning" in w.category.__name__:
            yield "warning", str(w.message)


# -- 3. our own checks -------------------------------------------------------------------------


def _attrs(store: Any, path: str = "") -> dict | None:
    try:
        return zarr.open_group(store=store, path=path, mode="r", zarr_format=3).attrs.asdict()
    except (FileNotFoundError, ValueError, KeyError):
        return None


def _check_own(url: str, storage_options: dict | None) -> Iterator[Finding]:
    store = open_store(url, storage_options, read_only=True)
    root = _attrs(store)
    if root is None:
        yield "problem", f"no zarr v3 group at {url}"
        return
    ome = root.get("ome") or {}
    plate = ome.get("plate")
    if ome.get("version") != NGFF_VERSION or not isinstance(plate, dict):
        yield "problem", f"not an NGFF {NGFF_VERSION} plate (ome.version={ome.get('version')!r})"
        return
    rows = [r.get("name") for r in plate.get("rows", [])]
    cols = [c.get("name") for c in plate.get("columns", [])]
    max_images = 0
    for i, well in enumerate(plate.get("wells", [])):
        path = str(well.get("path", ""))
        parts = path.split("/")
        if len(parts) != 2:
            yield "problem", f"plate.wells[{i}].path {path!r} is not '<row>/<column>'"
            continue
        row, col = parts
        for axis, name, names, key in (
            ("row", row, rows, "rowIndex"),
            ("column", col, cols, "columnIndex"),
        ):
            if name not in names:
                yield "problem", f"well {path}: {axis} {name!r} is not in plate.{axis}s"
            elif well.get(key) != names.index(name):
                yield (
                    "problem",
                    f"well {path}: {key} is {well.get(key)!r} but {axis} {name!r} is "
                    f"plate.{axis}s[{names.index(name)}]",
                )
        well_attrs = _attrs(store, path)
        if well_attrs is None:
            yield "problem", f"well {path} is listed in the plate but its group does not exist"
            continue
        images = (well_attrs.get("ome") or {}).get("well", {}).get("images")
        if not images:
            yield "problem", f"well {path} has no ome.well.images"
            continue
        max_images = max(max_images, len(images))
        for image in images:
            yield from _check_field(store, f"{path}/{image.get('path')}")
    field_count = plate.get("field_count")
    if field_count is not None and field_count < max_images:
        yield (
            "problem",
            f"plate.field_count is {field_count} but a well lists {max_images} images",
        )
    mark = root.get(MARK)
    if isinstance(mark, dict) and mark.get("status") != "complete":
        extra = f" (missing: {', '.join(mark['missing'])})" if mark.get("missing") else ""
        yield "warning", f"prefect-hcs status is {mark.get('status')!r}, not 'complete'{extra}"


def _check_field(store: Any, path: str) -> Iterator[Finding]:
    attrs = _attrs(store, path)
    if attrs is None:
        yield "problem", f"field {path} is listed in its well but its group does not exist"
        return
    multiscales = (attrs.get("ome") or {}).get("multiscales")
    if not multiscales:
        yield "problem", f"field {path} has no multiscales metadata (missing or half-written)"
        return
    ms = multiscales[0]
    axes = [a.get("name") for a in ms.get("axes", [])]
    group = zarr.open_group(store=store, path=path, mode="r", zarr_format=3)
    shapes: list[tuple[int, ...]] = []
    for d in ms.get("datasets", []):
        dpath = d.get("path")
        try:
            arr = group[dpath]
        except KeyError:
            yield "problem", f"field {path}: dataset {dpath!r} does not exist"
            continue
        if not isinstance(arr, zarr.Array):
            yield "problem", f"field {path}: dataset {dpath!r} is not an array"
            continue
        if arr.ndim != len(axes):
            yield "problem", f"field {path}/{dpath}: {arr.ndim} dims for {len(axes)} axes"
        names = list(getattr(arr.metadata, "dimension_names", None) or [])  # None on zarr v2
        if names != axes:
            yield "problem", f"field {path}/{dpath}: dimension_names {names} != axes {axes}"
        shapes.append(tuple(arr.shape))
    for (a_path, a), (b_path, b) in zip(
        zip((d.get("path") for d in ms["datasets"]), shapes, strict=False),
        zip((d.get("path") for d in ms["datasets"][1:]), shapes[1:], strict=False),
        strict=False,
    ):
        if len(a) != len(b) or any(y > x for x, y in zip(a, b, strict=True)) or b == a:
            yield (
                "problem",
                f"field {path}: level {b_path!r} shape {b} does not decrease from {a_path!r} {a}",
            )


# -- 4. ome-zarr-py reader ---------------------------------------------------------------------


@contextmanager
def _readable_root(url: str, storage_options: dict | None) -> Iterator[str]:
    """A path ome-zarr-py's `parse_url` reads: the plate itself when local, else a temporary
    mirror of its metadata documents (every ``zarr.json``; chunks are not needed to find nodes)."""
    if is_local(url) and not storage_options:
        yield local_path(url)
        return
    fs, root = sync_fs(url, storage_options)
    root = root.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="prefect-hcs-validate-") as tmp:
        for path in fs.find(root):
            if path.rsplit("/", 1)[-1] == "zarr.json":
                target = Path(tmp, path[len(root) :].lstrip("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(fs.cat_file(path))
        yield tmp


def _check_ome_zarr_reader(url: str, storage_options: dict | None) -> Iterator[Finding]:
    log = logging.getLogger("ome_zarr")
    level = log.level
    log.setLevel(logging.CRITICAL)  # it logs every missing tile; our findings say it once
    try:
        yield from _read_with_ome_zarr(url, storage_options)
    finally:
        log.setLevel(level)


def _read_with_ome_zarr(url: str, storage_options: dict | None) -> Iterator[Finding]:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Plate, Reader, Well

    with _readable_root(url, storage_options) as root:
        loc = parse_url(root, mode="r")
        if loc is None:
            yield "problem", f"parse_url found nothing at {url}"
            return
        nodes = list(Reader(loc)())
        plate_nodes = [n for n in nodes if n.load(Plate) is not None]
        if not plate_nodes:
            yield "problem", "the reader found no plate node"
            return
        wells = plate_nodes[0].metadata.get("metadata", {}).get("plate", {}).get("wells", [])
        for well in wells:
            wloc = parse_url(f"{root}/{well['path']}", mode="r")
            if wloc is None or not any(n.load(Well) is not None for n in Reader(wloc)()):
                yield "problem", f"the reader found no well node at {well['path']}"
