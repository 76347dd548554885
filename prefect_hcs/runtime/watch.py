"""The `watch-plates` flow: find complete plates in a folder and start one plate run for each.

A folder counts as a complete plate only when (1) a plate metadata file is present (anything
`detect_format` accepts: an ImageXpress .HTD, a Phenix index) and (2) its file listing (relative
names and sizes) is identical between two scans: the previous scan's listing is kept in a small
JSON state file, or, with `settle_seconds`, both scans happen in one run. A plate is started once:
the run's idempotency key is derived from the plate URL, its listing and the run parameters, so
overlapping watch runs (or a lost state file) find the run already made instead of making
another one. New files in a plate change its listing and make it eligible again.

Watching an OMERO screen is not supported yet (the OMERO layer has no screens); point the watch
at the folder the microscope exports into.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from prefect_hcs.errors import UserFacingError
from prefect_hcs.pipeline.secrets import PlainMapping, PlainStr
from prefect_hcs.runtime.guard import guarded_flow
from prefect_hcs.runtime.screen import PLATE_DEPLOYMENT

STATE_FILE = ".prefect-hcs/watch-state.json"


@dataclass(frozen=True)
class Listing:
    """One candidate plate folder as seen by one scan."""

    url: str
    has_metadata: bool
    digest: str
    files: int
    bytes: int


@dataclass(frozen=True)
class Started:
    """What the starter did: the plate run's id and name, and whether it was made just now."""

    flow_run_id: str
    flow_run_name: str
    created: bool


@dataclass(frozen=True)
class Decision:
    """One row of a watch run's table."""

    plate: str
    status: str
    files: int
    bytes: int
    flow_run: str = ""
    idempotency_key: str = ""


#: (plate URL, idempotency key) -> Started. Injected so the scan logic is testable alone.
Starter = Callable[[str, str], Started]


class WatchState(Protocol):
    """Where a watch run remembers listings and processed plates between scans."""

    def load(self) -> dict[str, Any]:
        """The saved state, or {} when there is none yet."""
        ...

    def save(self, data: dict[str, Any]) -> None:
        """Replace the saved state."""
        ...


# ------------------------------------------------------------------------------------ scanning
def _fs(folder: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    if folder.startswith("omero://"):
        raise UserFacingError(
            "watching an OMERO screen is not supported yet: watch the folder plates are exported "
            "to, or start plate runs for omero://plate_<id> URLs with the process-screen flow"
        )
    from prefect_hcs.formats.detect import resolve
    from prefect_hcs.runtime.stores import fsspec_options

    return resolve(folder, fsspec_options(folder, storage_options))


def _candidates(fs: Any, root: str) -> list[str]:
    """Direct sub-folders that could be plates (hidden folders and OME-Zarr outputs skipped)."""
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        raise UserFacingError(f"watch folder not found: {root}") from None
    out = []
    for e in entries:
        name = e["name"].rstrip("/").rsplit("/", 1)[-1]
        if e.get("type") != "directory" or name.startswith((".", "_")):
            continue
        children = [c.rstrip("/").rsplit("/", 1)[-1] for c in fs.ls(e["name"], detail=False)]
        if any(c.endswith(".ome.zarr") for c in children):
            continue  # an output folder written next to its plate
        out.append(e["name"].rstrip("/"))
    return sorted(out)


def listing_digest(files: dict[str, int]) -> str:
    """SHA-256 of the sorted (relative name, size) pairs."""
    blob = json.dumps(sorted(files.items()), separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def scan(folder: str, storage_options: dict[str, Any] | None = None) -> dict[str, Listing]:
    """{plate URL: Listing} of every candidate plate folder below `folder` (one level)."""
    from prefect_hcs.formats.detect import detect_format, display
    from prefect_hcs.formats.layout import PlateError

    fs, root = _fs(folder, storage_options)
    found: dict[str, Listing] = {}
    for path in _candidates(fs, root):
        try:
            detect_format(fs, path)
            has_metadata = True
        except PlateError:
            has_metadata = False
        files = {
            name[len(path) :].lstrip("/"): int(info.get("size") or 0)
            for name, info in fs.find(path, detail=True).items()
            if info.get("type") != "directory"
        }
        url = display(fs, path)
        found[url] = Listing(
            url, has_metadata, listing_digest(files), len(files), sum(files.values())
        )
    return found


def run_key(url: str, digest: str, parameters: dict[str, Any]) -> str:
    """Idempotency key of a plate run: same plate, same files, same parameters -> same key."""
    blob = json.dumps([url, digest, parameters], sort_keys=True, default=str)
    return f"hcs-watch:{hashlib.sha256(blob.encode()).hexdigest()[:40]}"


# ------------------------------------------------------------------------------------ state
class FileState:
    """Scan state as a JSON file at any fsspec URL, replaced atomically."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        import fsspec

        self.url = url
        from prefect_hcs.runtime.stores import fsspec_options

        self.fs, self.path = fsspec.core.url_to_fs(url, **fsspec_options(url, storage_options))

    def load(self) -> dict[str, Any]:
        """The saved state; a missing or damaged file reads as {} (one extra scan, no failure)."""
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}  # a damaged state only costs one extra scan

    def save(self, data: dict[str, Any]) -> None:
        """Write a temporary file, then move it over the state, so a reader never sees half."""
        parent = self.path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{self.path}.{time.time_ns()}.tmp"
        self.fs.pipe_file(tmp, json.dumps(data, indent=1, sort_keys=True).encode())
        self.fs.mv(tmp, self.path)


class NoState:
    """No persisted state: only `settle_seconds` can show a plate is stable."""

    def load(self) -> dict[str, Any]:
        """Always {}: nothing is remembered."""
        return {}

    def save(self, data: dict[str, Any]) -> None:
        """Discard the state."""
        return None


def default_state(folder: str, state: str | None, storage_options: dict[str, Any] | None) -> Any:
    """`state` None: a file in the watched folder; "" (empty): none; else the file's URL."""
    if state == "":
        return NoState()
    if state is None:
        return FileState(f"{folder.rstrip('/')}/{STATE_FILE}", storage_options)
    return FileState(state)


# ------------------------------------------------------------------------------------ deciding
def watch_once(
    folder: str,
    start: Starter,
    *,
    parameters: dict[str, Any] | None = None,
    state: WatchState | None = None,
    settle_seconds: float = 0.0,
    storage_options: dict[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Decision]:
    """One watch pass: scan, compare with the previous scan, start each stable unstarted plate."""
    state = state or NoState()
    params = dict(parameters or {})
    saved = state.load()
    previous: dict[str, str] = dict(saved.get("listings", {}))
    processed: dict[str, str] = dict(saved.get("processed", {}))
    current = scan(folder, storage_options)
    if settle_seconds > 0:
        sleep(settle_seconds)
        previous = {u: lst.digest for u, lst in current.items()}
        current = scan(folder, storage_options)

    decisions = []
    for url, lst in current.items():
        key = run_key(url, lst.digest, params)
        row = functools.partial(Decision, plate=url, files=lst.files, bytes=lst.bytes)
        if not lst.has_metadata:
            decisions.append(row(status="waiting: no plate metadata yet"))
        elif url not in previous:
            decisions.append(row(status="waiting: first seen"))
        elif previous[url] != lst.digest:
            decisions.append(row(status="waiting: still being written"))
        elif processed.get(url) == key:
            decisions.append(row(status="already processed", idempotency_key=key))
        else:
            got = start(url, key)
            processed[url] = key
            status = "started" if got.created else "already processed"
            decisions.append(row(status=status, flow_run=got.flow_run_name, idempotency_key=key))
    # merge, do not replace: a concurrent watch run may have recorded plates too
    latest = state.load()
    merged_processed = {**latest.get("processed", {}), **processed}
    state.save(
        {
            "folder": folder,
            "listings": {u: lst.digest for u, lst in current.items()},
            "processed": {u: k for u, k in merged_processed.items() if u in current},
        }
    )
    return decisions


# ------------------------------------------------------------------------------------ Prefect
def deployment_starter(deployment: str, parameters: dict[str, Any]) -> Starter:
    """A Starter that makes a `deployment` run per plate, never two for one idempotency key.

    The key is looked up first (so a re-scan reports "already processed"); `run_deployment`
    with the same key then makes the check race-free on the server side.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterIdempotencyKey,
    )
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.deployments import run_deployment

    def start(url: str, key: str) -> Started:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(deployment)
            existing = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=[key])
                ),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                sort=FlowRunSort.ID_DESC,
                limit=1,
            )
        if existing:
            return Started(str(existing[0].id), existing[0].name, created=False)
        # sync_compatible: called from this synchronous function it returns the FlowRun itself
        run = cast(
            FlowRun,
            run_deployment(
                deployment,
                parameters={**parameters, "plate": url},
                timeout=0,
                idempotency_key=key,
                as_subflow=False,
                tags=["hcs-watch"],
            ),
        )
        return Started(str(run.id), run.name, created=True)

    return start


def _watch_run_name() -> str:
    from prefect.runtime import flow_run

    folder = str(flow_run.parameters.get("folder", "")).rstrip("/")
    return f"watch-{folder.rsplit('/', 1)[-1] or 'folder'}"


@guarded_flow(name="watch-plates", flow_run_name=_watch_run_name, validate_parameters=True)
def watch_plates(
    folder: PlainStr,
    pipeline: PlainStr | PlainMapping | None = "demo",
    global_config: PlainStr | None = None,
    pipeline_config: PlainStr | None = None,
    storage_options: PlainMapping | None = None,
    plate_deployment: str = PLATE_DEPLOYMENT,
    state: str | None = None,
    settle_seconds: float = 0.0,
    output_storage_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Scan `folder` for complete plates and start one `plate_deployment` run per new plate.

    `state`: URL of the JSON file that keeps the previous scan (default: a file under
    `<folder>/.prefect-hcs/`; "" keeps none). `settle_seconds` > 0 scans twice in this run.
    """
    logger = get_run_logger()
    params = {
        "pipeline": pipeline,
        "global_config": global_config,
        "pipeline_config": pipeline_config,
        "storage_options": storage_options,
    }
    if output_storage_options is not None:  # only when given: keeps earlier runs' keys
        params["output_storage_options"] = output_storage_options
    decisions = watch_once(
        folder,
        deployment_starter(plate_deployment, params),
        parameters=params,
        state=default_state(folder, state, storage_options),
        settle_seconds=settle_seconds,
        storage_options=storage_options,
    )
    rows = [asdict(d) for d in decisions]
    started = [d for d in decisions if d.status == "started"]
    logger.info("%d plate folder(s), %d run(s) started", len(rows), len(started))
    if rows:
        create_table_artifact(
            rows, key="watch-plates", description=f"Plate folders found in {folder}"
        )
    return rows
