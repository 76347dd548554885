"""The watch logic: which plate folders count as complete, and each is started exactly once.

Scan decisions are tested without a server through an injected starter; the "two overlapping
watch runs start one plate run" property is tested against the real server.
"""

from __future__ import annotations

import contextvars
import threading
import time
from pathlib import Path

import pytest

from prefect_hcs.errors import UserFacingError
from prefect_hcs.runtime.watch import (
    FileState,
    NoState,
    Started,
    run_key,
    scan,
    watch_once,
)
from prefect_hcs.testing.synthetic import make_plate


class FakeStarter:
    """Records calls; mimics the server's idempotency (same key -> same run)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.runs: dict[str, str] = {}

    def __call__(self, url: str, key: str) -> Started:
        self.calls.append((url, key))
        created = key not in self.runs
        self.runs.setdefault(key, f"run-{len(self.runs) + 1}")
        return Started(self.runs[key], self.runs[key], created)


def _plate(folder: Path, name: str = "P1") -> Path:
    path = folder / name
    make_plate(
        str(path), format="imagexpress", wells=["A01"], sites=1, channels=1, z=1, size=32, seed=2
    )
    return path


def _status(decisions, url: str) -> str:
    return next(d.status for d in decisions if d.plate == url)


def test_complete_plate_starts_on_the_second_identical_scan_and_only_once(tmp_path):
    inbox = tmp_path / "inbox"
    plate = _plate(inbox)
    state = FileState(str(tmp_path / "state.json"))
    start = FakeStarter()
    first = watch_once(str(inbox), start, state=state)
    assert _status(first, str(plate)) == "waiting: first seen" and start.calls == []
    second = watch_once(str(inbox), start, state=state)
    assert _status(second, str(plate)) == "started"
    assert [url for url, _ in start.calls] == [str(plate)]
    third = watch_once(str(inbox), start, state=state)
    assert _status(third, str(plate)) == "already processed"
    assert len(start.calls) == 1  # not restarted


def test_plate_still_being_written_is_not_started(tmp_path):
    inbox = tmp_path / "inbox"
    plate = _plate(inbox)
    state = FileState(str(tmp_path / "state.json"))
    start = FakeStarter()
    watch_once(str(inbox), start, state=state)
    # the microscope adds a file, then grows one (same names, different size)
    (plate / "TimePoint_1" / "extra_A01_s1_w2.tif").write_bytes(b"x" * 100)
    assert _status(watch_once(str(inbox), start, state=state), str(plate)).endswith("written")
    (plate / "TimePoint_1" / "extra_A01_s1_w2.tif").write_bytes(b"x" * 200)
    assert _status(watch_once(str(inbox), start, state=state), str(plate)).endswith("written")
    assert start.calls == []
    assert _status(watch_once(str(inbox), start, state=state), str(plate)) == "started"


def test_plate_without_metadata_is_never_started(tmp_path):
    inbox = tmp_path / "inbox"
    plate = _plate(inbox)
    for htd in plate.rglob("*.HTD"):
        htd.unlink()
    for i, tif in enumerate(sorted(plate.rglob("*.tif"))):  # no vendor names either
        tif.rename(tif.with_name(f"scan_{i:04d}.tif"))
    state = FileState(str(tmp_path / "state.json"))
    start = FakeStarter()
    for _ in range(3):
        decisions = watch_once(str(inbox), start, state=state)
    assert _status(decisions, str(plate)) == "waiting: no plate metadata yet"
    assert start.calls == []


def test_metaxpress_acquisition_folder_without_htd_is_a_plate(tmp_path):
    inbox = tmp_path / "inbox"
    plate = _plate(inbox)
    for htd in plate.rglob("*.HTD"):  # the instrument's acquisition folder has none
        htd.unlink()
    state = FileState(str(tmp_path / "state.json"))
    start = FakeStarter()
    first = watch_once(str(inbox), start, state=state)
    assert _status(first, str(plate)) == "waiting: first seen"
    again = watch_once(str(inbox), start, state=state)
    assert _status(again, str(plate)) == "started" and len(start.calls) == 1


def test_settle_seconds_compares_two_scans_within_one_run(tmp_path):
    inbox = tmp_path / "inbox"
    plate = _plate(inbox)
    start = FakeStarter()

    def writer_still_busy(seconds: float) -> None:
        (plate / "late.tif").write_bytes(b"late")

    busy = watch_once(str(inbox), start, state=NoState(), settle_seconds=5, sleep=writer_still_busy)
    assert _status(busy, str(plate)) == "waiting: still being written" and start.calls == []
    quiet = watch_once(str(inbox), start, state=NoState(), settle_seconds=5, sleep=lambda s: None)
    assert _status(quiet, str(plate)) == "started" and len(start.calls) == 1


def test_changed_plate_is_processed_again_once_stable(tmp_path):
    """New files after processing make a new listing, hence a new idempotency key."""
    inbox = tmp_path / "inbox"
    plate = _plate(inbox)
    state = FileState(str(tmp_path / "state.json"))
    start = FakeStarter()
    watch_once(str(inbox), start, state=state)
    watch_once(str(inbox), start, state=state)
    (plate / "reexport.txt").write_text("more")
    watch_once(str(inbox), start, state=state)
    assert _status(watch_once(str(inbox), start, state=state), str(plate)) == "started"
    assert len({key for _, key in start.calls}) == 2


def test_outputs_hidden_folders_and_state_are_not_plates(tmp_path):
    inbox = tmp_path / "inbox"
    plate = _plate(inbox)
    (inbox / "P1_hcs" / "P1.ome.zarr").mkdir(parents=True)
    (inbox / ".cache").mkdir()
    watch_once(str(inbox), FakeStarter(), state=FileState(str(inbox / ".prefect-hcs/s.json")))
    assert list(scan(str(inbox))) == [str(plate)]


def test_run_key_depends_on_plate_listing_and_parameters():
    a = run_key("/data/P1", "d1", {"pipeline": "demo"})
    assert a == run_key("/data/P1", "d1", {"pipeline": "demo"})
    assert a != run_key("/data/P1", "d2", {"pipeline": "demo"})
    assert a != run_key("/data/P1", "d1", {"pipeline": "other"})
    assert a != run_key("/data/P2", "d1", {"pipeline": "demo"})


def test_omero_screens_are_not_supported_yet():
    with pytest.raises(UserFacingError, match="not supported yet"):
        watch_once("omero://screen_1", FakeStarter())


# ------------------------------------------------------------------------ against the server
def _deployment_runs(deployment_id, expected: int, timeout: float = 20):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                sort=FlowRunSort.ID_DESC,
                limit=50,
            )
            if len(runs) >= expected or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


@pytest.mark.server
def test_two_concurrent_watch_runs_start_one_plate_run(prefect_server, tmp_path):
    """Two overlapping watch runs (no shared state file) make one plate run, via the key."""
    from prefect_hcs.runtime.flow import process_plate
    from prefect_hcs.runtime.watch import watch_plates

    # a deployment nobody serves: its runs stay Scheduled, so only their count matters
    dep_id = process_plate.to_deployment("watch-test").apply()
    inbox = tmp_path / "inbox"
    plate = _plate(inbox)
    results: dict[int, list] = {}

    def one_watch(i: int) -> None:
        results[i] = watch_plates(
            folder=str(inbox),
            plate_deployment="process-plate/watch-test",
            state="",
            settle_seconds=1.0,
        )

    # threads do not inherit context variables (the fixture's Prefect settings live in one)
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(one_watch, i))
        for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 2, "a watch run did not finish"
    rows = [r for i in (0, 1) for r in results[i] if r["plate"] == str(plate)]
    assert len(rows) == 2 and len({r["flow_run"] for r in rows}) == 1
    assert {r["status"] for r in rows} <= {"started", "already processed"}

    # run_deployment creates runs synchronously, so after both watch runs ended the count is final
    runs = _deployment_runs(dep_id, expected=1)
    assert len(runs) == 1, [r.name for r in runs]
    assert runs[0].parameters["plate"] == str(plate)
    assert runs[0].idempotency_key == rows[0]["idempotency_key"]
    assert "hcs-watch" in runs[0].tags

    # a later scheduled watch with its own state file still finds the run: not restarted
    for _ in range(2):
        later = watch_plates(folder=str(inbox), plate_deployment="process-plate/watch-test")
    assert [r["status"] for r in later] == ["already processed"]
    assert len(_deployment_runs(dep_id, expected=1)) == 1
