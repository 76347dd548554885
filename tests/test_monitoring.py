"""What a plate run shows in the Prefect UI, read back from a real server on PostgreSQL.

A 96-well plate and a plate with one corrupt well run in subprocesses (as a user's `prefect-hcs
run` would) against a server on a fresh PostgreSQL database; the tests then poll the REST API for
names, tags, artifacts, events, logs and the final state of every task run.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from prefect_hcs.formats.wells import well_id
from prefect_hcs.runtime import artifacts, thumbnails
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime.monitoring import THUMBNAIL_BUDGET
from prefect_hcs.runtime.ui_events import (
    artifact_key,
    omero_link,
    redact_url,
    slug,
)
from prefect_hcs.testing.synthetic import make_plate

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
WELLS_96 = [well_id(r, c) for r in range(8) for c in range(12)]
_RUN = """
import json, sys
from prefect_hcs.runtime.flow import process_plate
kw = json.loads(sys.argv[2])
state = process_plate(plate=sys.argv[1], return_state=True, **kw)
print("RESULT " + json.dumps({"flow_run_id": str(state.state_details.flow_run_id),
                              "type": state.type.value, "message": state.message}))
"""


# ----------------------------------------------------------------------------- unit level
def test_thumbnail_is_a_small_png_of_the_well() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    array = rng.integers(0, 4000, size=(1, 2, 3, 4, 150, 130), dtype=np.uint16)  # TCZQYX
    png = thumbnails.encode_png(array)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "L" and max(image.size) <= thumbnails.THUMB_PX
    assert len(png) < 12_000
    assert (
        thumbnails.thumbnail_url("/o/P_hcs/.hcs-done", "B03") == "/o/P_hcs/.hcs-thumbnails/B03.png"
    )
    omero_done = "omero://plate_7/A01/outputs/.hcs-done"  # on OMERO: a marker folder per well
    assert (
        thumbnails.thumbnail_url(omero_done, "A01")
        == "omero://plate_7/A01/outputs/.hcs-thumbnails/A01.png"
    )


def test_thumbnails_artifact_stays_within_its_budget() -> None:
    rng = np.random.default_rng(1)
    pngs = {
        w: thumbnails.encode_png(rng.integers(0, 60000, (1, 1, 1, 1, 96, 96), dtype=np.uint16))
        for w in [well_id(r, c) for r in range(16) for c in range(24)]  # 384 wells of noise
    }
    md = artifacts.thumbnails_markdown("P384", pngs, budget=200_000)
    assert len(md) < 205_000
    assert md.count("data:image/png;base64,") >= 100  # shrunk first, then cut, and says so
    assert "| **A** |" in md and "more well(s) not shown" in md  # laid out like the plate
    small = artifacts.thumbnails_markdown("P", dict(list(pngs.items())[:4]), budget=10**6)
    assert small.count("data:image/png;base64,") == 4 and "not shown" not in small


def test_keys_and_links_never_carry_secrets_or_bad_characters() -> None:
    assert artifact_key("progress", "Plate_01 (rerun)") == "progress-plate-01-rerun"
    assert slug("ÄBC") == "bc"
    assert redact_url("s3://key:secret@bucket/p") == "s3://bucket/p"
    assert redact_url("/data/P1") == "/data/P1"
    assert omero_link("omero://plate_403") == "omero://plate_403"
    os.environ["PREFECT_HCS_OMERO_WEB_URL"] = "https://omero.example.org/"
    try:
        assert (
            omero_link("omero://plate_403") == "https://omero.example.org/webclient/?show=plate-403"
        )
    finally:
        del os.environ["PREFECT_HCS_OMERO_WEB_URL"]


# ----------------------------------------------------------------------------- PostgreSQL server
def _pg(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(database="postgres", timeout=5, **PG)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def pg_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server on a fresh PostgreSQL database, dropped afterwards."""
    from prefect_hcs.runtime.server import start_server

    db = f"prefect_hcs_test_{uuid.uuid4().hex[:10]}"
    try:
        _pg(f'CREATE DATABASE "{db}"')
    except (TimeoutError, OSError) as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG['host']}:{PG['port']}: {exc}")
    server = None
    try:
        server = start_server(
            tmp_path_factory.mktemp("pg-server-home"),
            database_url=f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{db}",
        )
        yield server.api_url
    finally:
        if server is not None:
            server.stop()
        _pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _run_plate(api_url: str, plate: str, home: Path, **params: Any) -> dict[str, Any]:
    """Run `process-plate` in a fresh process, as a user would; INFO logs on, like theirs."""
    env = dict(os.environ)
    env.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(home), PREFECT_LOGGING_LEVEL="INFO")
    out = subprocess.run(
        [sys.executable, "-c", _RUN, plate, json.dumps(params)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def _post(api_url: str, path: str, body: dict[str, Any]) -> Any:
    r = httpx.post(f"{api_url}{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def _poll(fetch: Any, done: Any, timeout: float = 60.0) -> Any:
    """Records arrive asynchronously (events and task runs go through the server's queues)."""
    deadline = time.monotonic() + timeout
    while True:
        got = fetch()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def _task_runs(api_url: str, flow_run_id: str) -> list[dict[str, Any]]:
    body = {
        "flow_runs": {"id": {"any_": [flow_run_id]}},
        "sort": "EXPECTED_START_TIME_ASC",
        "limit": 200,
    }
    return _post(api_url, "/task_runs/filter", body)


def _artifacts(api_url: str, flow_run_id: str) -> dict[str, dict[str, Any]]:
    body = {
        "artifacts": {"flow_run_id": {"any_": [flow_run_id]}},
        "sort": "CREATED_DESC",
        "limit": 200,
    }
    found = {}
    for a in _post(api_url, "/artifacts/filter", body):
        data = a["data"]
        if a["type"] == "table" and isinstance(data, str):
            data = json.loads(data)
        found[a["key"]] = {**a, "data": data}
    return found


def _events(api_url: str, plate_id: str, since: str) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "occurred": {"since": since},
            "event": {"prefix": ["prefect-hcs."]},
            "resource": {"id": [f"prefect-hcs.plate.{plate_id}"]},
        },
        "limit": 50,
    }
    return _post(api_url, "/events/filter", body)["events"]


def _now() -> str:
    return datetime.now(UTC).isoformat()


# ----------------------------------------------------------------------------- a 96-well plate
@pytest.fixture(scope="module")
def run96(pg_api: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real 96-well run (demo pipeline, 4 sites of 64 px, 1 channel), shared by the tests."""
    from prefect_hcs.runtime.compile import compile_from_parameters

    root = tmp_path_factory.mktemp("plate96")
    plate = root / "P96"
    make_plate(
        str(plate), format="imagexpress", wells=WELLS_96, sites=4, channels=1, z=1, size=64,
        seed=7,
    )  # fmt: skip
    g = root / "global.yaml"
    g.write_text("num_workers: 2\n")  # a global-layer value the plan-config artifact must show
    since = _now()
    started = time.monotonic()
    result = _run_plate(pg_api, str(plate), root / "client-home", global_config=str(g))
    seconds = time.monotonic() - started
    plan = compile_from_parameters(str(plate), "demo", str(g), None, {})
    return {"result": result, "plan": plan, "since": since, "seconds": seconds}


@pytest.mark.server
@pytest.mark.timeout(300)
def test_every_task_run_of_96_wells_is_named_final_and_untagged(pg_api, run96) -> None:
    from prefect_hcs.runtime.scheduler import steps_label, wells_label

    assert run96["result"]["type"] == "COMPLETED", run96["result"]
    plan = run96["plan"]
    fr = run96["result"]["flow_run_id"]
    expected = {
        f"{t} · P96"
        for t in ("compile-plan", "prepare-outputs", "check-completed", "finalize-outputs")
    }
    expected |= {f"{steps_label(plan.steps)} · {wells_label(list(c))}" for c in plan.chunks}
    assert len(plan.wells) == 96 and len(plan.chunks) > 1
    runs = _poll(
        lambda: _task_runs(pg_api, fr),
        lambda rs: (
            len(rs) >= len(expected)
            and all(r["state_type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED") for r in rs)
        ),
    )
    assert sorted(r["name"] for r in runs) == sorted(expected)  # none lost, none duplicated
    stuck = [(r["name"], r["state_type"]) for r in runs if r["state_type"] != "COMPLETED"]
    assert stuck == []  # none left Running/Pending
    assert all(r["tags"] == [] for r in runs)  # tags cost a concurrency call per task run

    flow_run = httpx.get(f"{pg_api}/flow_runs/{fr}", timeout=30).json()
    assert flow_run["name"] == "plate-P96" and flow_run["state_type"] == "COMPLETED"
    assert {"plate:P96", "pipeline:demo"} <= set(flow_run["tags"])

    # logs: per task run ours + Prefect's "Finished in state", a few per plate; never one line per
    # well or image (96 wells × 4 sites = 384 images would blow this bound)
    logs = _post(
        pg_api,
        "/logs/filter",
        {"logs": {"flow_run_id": {"any_": [fr]}}, "sort": "TIMESTAMP_ASC", "limit": 200},
    )
    info = [entry for entry in logs if entry["level"] == 20]
    assert 0 < len(info) <= 2 * len(expected) + 10 < 2 * len(expected) + 96, len(info)


@pytest.mark.server
def test_artifacts_show_plan_progress_summary_thumbnails_and_links(pg_api, run96) -> None:
    plan, fr = run96["plan"], run96["result"]["flow_run_id"]
    keys = {
        k: artifact_key(k, "P96")
        for k in ("plan", "plan-config", "progress", "wells", "thumbnails", "output")
    }
    arts = _poll(lambda: _artifacts(pg_api, fr), lambda a: set(keys.values()) <= set(a))
    kinds = {k: arts[v]["type"] for k, v in keys.items()}
    assert kinds == {
        "plan": "table", "plan-config": "table", "progress": "progress", "wells": "table",
        "thumbnails": "markdown", "output": "markdown",  # a link artifact is stored as markdown
    }  # fmt: skip

    steps = arts[keys["plan"]]["data"]
    assert [r["step"] for r in steps] == list(plan.steps)
    assert steps[-1]["output"] == plan.output.zarr_url
    assert all(r["read"] and r["write"] and r["materialized"] for r in steps)
    assert "count_measurements.csv" in steps[-1]["tables"]

    config = {r["setting"]: r for r in arts[keys["plan-config"]]["data"]}
    assert config["num_workers"]["layer"] == "global" and config["num_workers"]["steps"] == "all"
    assert config["zarr_config.compressor"]["layer"] == "default"

    assert arts[keys["progress"]]["data"] == 100
    assert "96/96 wells finished: 96 completed" in arts[keys["progress"]]["description"]

    wells = arts[keys["wells"]]["data"]
    assert [r["well"] for r in wells] == WELLS_96
    assert {r["status"] for r in wells} == {"completed"}
    assert all(r["seconds"] > 0 for r in wells)
    # the nuclei column is the pipeline's own measurements table, well by well (accuracy against
    # ground truth is test_flow_run's job, on bigger images)
    table = hio.csv_to_rows(hio.read_bytes(plan.output.tables["count.measurements"]))
    assert {r["well"]: r["nuclei"] for r in wells} == {
        r["well"]: int(r["nuclei_count"]) for r in table
    }
    assert all(r["nuclei"] > 0 for r in wells)

    md = arts[keys["thumbnails"]]["data"]
    uris = md.split("data:image/png;base64,")[1:]
    assert len(uris) == 96 and len(md) <= THUMBNAIL_BUDGET + 2_000
    from PIL import Image

    first = Image.open(io.BytesIO(base64.b64decode(uris[0].split(")", 1)[0])))
    assert max(first.size) <= thumbnails.THUMB_PX

    link = arts[keys["output"]]["data"]
    assert Path(plan.output.zarr_url).as_uri() in link


@pytest.mark.server
def test_events_tell_started_and_completed_with_the_plate(pg_api, run96) -> None:
    fr = run96["result"]["flow_run_id"]
    events = _poll(
        lambda: _events(pg_api, "P96", run96["since"]),
        lambda es: (
            {"prefect-hcs.plate.started", "prefect-hcs.plate.completed"} <= {e["event"] for e in es}
        ),
    )
    by_name = {e["event"]: e for e in events}
    assert set(by_name) == {"prefect-hcs.plate.started", "prefect-hcs.plate.completed"}
    for e in by_name.values():
        assert e["resource"]["prefect.resource.id"] == "prefect-hcs.plate.P96"
        assert e["payload"]["plate"] == "P96"
        assert f"prefect.flow-run.{fr}" in {r["prefect.resource.id"] for r in e["related"]}
    assert by_name["prefect-hcs.plate.started"]["payload"]["wells"]["total"] == 96
    done = by_name["prefect-hcs.plate.completed"]["payload"]
    assert done["wells"] == {"total": 96, "completed": 96, "failed": 0, "skipped": 0}
    assert done["output"].startswith("file://") and done["reason"] == ""


# ----------------------------------------------------------------------------- a failing plate
@pytest.mark.server
@pytest.mark.timeout(300)
def test_a_corrupt_well_emits_well_failed_and_plate_failed_with_the_reason(
    pg_api: str, tmp_path: Path
) -> None:
    plate = tmp_path / "Broken"
    make_plate(
        str(plate), format="imagexpress", wells=["A01", "A02", "B01", "B02"], sites=4,
        channels=1, z=1, size=64, seed=3,
    )  # fmt: skip
    victim = sorted(plate.rglob("*_A02_s3_w1*.tif"))[0]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated TIFF
    automation_id = _post(pg_api, "/automations/", _documented_automation())["id"]
    since = _now()
    result = _run_plate(pg_api, str(plate), tmp_path / "client-home")
    assert result["type"] == "FAILED"
    fr = result["flow_run_id"]

    events = _poll(
        lambda: _events(pg_api, "Broken", since),
        lambda es: (
            {"prefect-hcs.well.failed", "prefect-hcs.plate.failed"} <= {e["event"] for e in es}
        ),
    )
    names = sorted(e["event"] for e in events)
    assert names == [
        "prefect-hcs.plate.failed", "prefect-hcs.plate.started", "prefect-hcs.well.failed"
    ]  # fmt: skip
    well = next(e for e in events if e["event"] == "prefect-hcs.well.failed")["payload"]
    assert well["well"] == "A02" and well["step"] == "project" and victim.name in well["reason"]
    failed = next(e for e in events if e["event"] == "prefect-hcs.plate.failed")
    assert failed["payload"]["failed_wells"] == ["A02"]
    assert "PlateRunError" in failed["payload"]["reason"] and "A02" in failed["payload"]["reason"]
    assert failed["payload"]["wells"] == {"total": 4, "completed": 3, "failed": 1, "skipped": 0}
    assert f"prefect.flow-run.{fr}" in {r["prefect.resource.id"] for r in failed["related"]}

    arts = _poll(lambda: _artifacts(pg_api, fr), lambda a: artifact_key("wells", "Broken") in a)
    rows = {r["well"]: r for r in arts[artifact_key("wells", "Broken")]["data"]}
    assert rows["A02"]["status"] == "failed" and "project" in rows["A02"]["detail"]
    assert rows["A02"]["nuclei"] is None
    assert all(rows[w]["status"] == "completed" and rows[w]["nuclei"] > 0 for w in ("A01", "B01"))
    assert arts[artifact_key("progress", "Broken")]["data"] == 100
    md = arts[artifact_key("thumbnails", "Broken")]["data"]
    assert md.count("data:image/png;base64,") == 3 and "![A02]" not in md

    runs = _poll(
        lambda: _task_runs(pg_api, fr),
        lambda rs: rs and all(r["state_type"] not in ("RUNNING", "PENDING") for r in rs),
    )
    assert all(r["state_type"] in ("COMPLETED", "FAILED") for r in runs), runs

    # the documented Automation fired on plate.failed
    fired = _poll(
        lambda: _post(
            pg_api,
            "/events/filter",
            {"filter": {"occurred": {"since": since},
                        "resource": {"id": [f"prefect.automation.{automation_id}"]}},
             "limit": 50},
        )["events"],
        lambda es: any(e["event"] == "prefect.automation.action.executed" for e in es),
    )  # fmt: skip
    assert "prefect.automation.action.executed" in {e["event"] for e in fired}, fired


def _documented_automation() -> dict[str, Any]:
    """The example Automation of docs/monitoring.md, with a do-nothing action (no block needed)."""
    doc = (Path(__file__).parents[1] / "docs" / "monitoring.md").read_text()
    section = doc.split("## Example Automation", 1)[1]
    automation = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    assert automation["trigger"]["expect"] == ["prefect-hcs.plate.failed"]
    return {**automation, "actions": [{"type": "do-nothing"}]}
