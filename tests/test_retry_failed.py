"""`prefect-hcs retry-failed`: finds failed plate runs through the API and runs them again."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prefect_hcs.testing.synthetic import make_plate

pytestmark = pytest.mark.server


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("prefect-hcs")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )


def test_retry_failed_reruns_a_local_failed_run_and_resumes(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client

    from prefect_hcs.runtime.flow import process_plate
    from prefect_hcs.runtime.retry import RETRIED_TAG

    since = datetime.now(UTC).isoformat()  # only this test's runs (others leave failed runs)
    plate = tmp_path / "Flaky"
    make_plate(
        str(plate),
        format="imagexpress",
        wells=["A01", "A02"],
        sites=4,
        channels=1,
        z=1,
        size=128,
        seed=5,
    )
    victim = sorted(plate.rglob("*_A02_s1_w1*.tif"))[0]
    good = victim.read_bytes()
    victim.write_bytes(good[:120])
    failed = process_plate(plate=str(plate), return_state=True)
    assert failed.is_failed()
    failed_id = failed.state_details.flow_run_id

    listed = _cli("retry-failed", "--since", since, "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert str(failed_id) in listed.stdout and str(plate) in listed.stdout

    victim.write_bytes(good)  # the user replaces the corrupt file
    out = _cli("retry-failed", "--since", since)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rerun" in out.stdout and "COMPLETED" in out.stdout
    with get_client(sync_client=True) as client:
        assert RETRIED_TAG in client.read_flow_run(failed_id).tags
    again = _cli("retry-failed", "--since", since, "--dry-run")
    assert str(failed_id) not in again.stdout  # not retried twice
    summary_marker = tmp_path / "Flaky_hcs" / ".hcs-done" / "A02.json"
    assert summary_marker.exists()


def test_retry_failed_rejects_a_bad_since():
    out = _cli("retry-failed", "--since", "yesterday-ish")
    assert out.returncode == 2 and "neither a duration" in out.stderr
