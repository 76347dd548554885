"""The fsspec options a process uses for a URL, with credentials loaded from their block.

Plans and run parameters carry *storage options by reference*: non-secret fsspec options plus,
for object stores, ``credentials_block`` (a block name). `fsspec_options` turns them into what
fsspec needs, in the process that opens the store; the result holds secrets and is only ever
passed to fsspec, never returned from a task, logged or stored.

`check_location` is the compile-time check: before a run starts, the plate's and the output's
buckets must answer with their own options, or the user gets one line saying what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect_hcs.pipeline.plan import OutputPlan
from prefect_hcs.storage import object_store

#: The storage-option key that names a credentials block (never a secret itself).
CREDENTIALS_KEY = "credentials_block"

#: {block name: fsspec credentials} the flow handed to this worker process (`use_credentials`).
_GIVEN: dict[str, dict[str, Any]] = {}


def fsspec_options(url: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Options for ``fsspec.url_to_fs(url, **options)``.

    Local paths and ``memory://`` take none; ``omero://`` options are passed through (the OMERO
    filesystem loads its own block); object stores get their credentials block's keys merged
    under the explicit options.
    """
    scheme = object_store.scheme_of(url)
    if scheme in ("", "file", "local", "memory"):
        return {}
    opts = dict(options or {})
    if not object_store.is_object_store(url):
        return opts
    ref = opts.pop(CREDENTIALS_KEY, None)
    if not ref:
        return object_store.merge_options({}, opts)
    if str(ref) in _GIVEN:
        return object_store.merge_options(dict(_GIVEN[str(ref)]), opts)
    from prefect_hcs.blocks.storage_credentials import credentials_options

    return object_store.merge_options(credentials_options(str(ref)), opts)


def credentials_for(*options: Mapping[str, Any] | OutputPlan | None) -> dict[str, dict[str, Any]]:
    """{block name: fsspec credentials} of every credentials block `options` name.

    Loaded here (the flow process) for a worker process that has no Prefect client: they hold
    secrets and only ever travel to that process's `use_credentials`, never into a plan, a
    parameter, a log or a result.
    """
    refs = set()
    for opts in options:
        mapping = opts.storage_options if isinstance(opts, OutputPlan) else opts
        if mapping and mapping.get(CREDENTIALS_KEY):
            refs.add(str(mapping[CREDENTIALS_KEY]))
    if not refs:
        return {}
    from prefect_hcs.blocks.storage_credentials import credentials_options

    return {ref: credentials_options(ref) for ref in sorted(refs)}


def use_credentials(given: Mapping[str, dict[str, Any]]) -> None:
    """In a worker process: use these credentials (from `credentials_for`) for their blocks."""
    _GIVEN.update(given)


def check_location(url: str, options: Mapping[str, Any] | None, role: str) -> None:
    """Probe an object store before a run (no-op for other URLs); `role` is "plate" or "output".

    Raises `object_store.StoreAccessError` (or `CredentialsBlockError`) with one clear line.
    """
    if object_store.is_object_store(url):
        block = (options or {}).get(CREDENTIALS_KEY)
        object_store.check_store(url, fsspec_options(url, options), role, block)


def zarr_options(output: OutputPlan) -> dict[str, Any]:
    """fsspec options for the output OME-Zarr plate (credentials resolved in this process)."""
    return fsspec_options(output.zarr_url or "", output.storage_options)
