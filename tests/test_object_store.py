"""Plates and outputs on object storage, end to end, against a real S3 API (moto server mode).

The plate is written locally by the synthetic generator and uploaded to one bucket; runs write to
another bucket with other credentials (a different Prefect credentials block, each IAM user
allowed only its own bucket). Outputs are read back through s3fs and validated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from s3_server import start_s3_server

from prefect_hcs.formats.omezarr import read_well_image
from prefect_hcs.formats.validate_zarr import validate_plate
from prefect_hcs.testing.synthetic import make_plate

pytestmark = pytest.mark.server
WELLS = ["A01", "A02", "B01", "B02"]
RAW, RESULTS = "raw-plates", "hcs-results"
PLATE = f"s3://{RAW}/instrument-7/S3Plate"
RAW_OPTS = {"credentials_block": "minio-credentials/raw-store"}
CLI = str(Path(sys.executable).with_name("prefect-hcs"))  # this venv's, with or without PATH


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The S3 server with two buckets, two users and the plate uploaded; auth then enforced."""
    tmp = tmp_path_factory.mktemp("s3")
    server = start_s3_server(tmp / "moto.log")
    try:
        admin = server.admin_client()
        for bucket in (RAW, RESULTS):
            admin.create_bucket(Bucket=bucket)
        server.add_user("instrument", [RAW])
        server.add_user("analysis", [RESULTS])
        server.add_user("facility", ["*"])  # every bucket: a missing one is then "no such bucket"
        local = tmp / "S3Plate"
        make_plate(
            str(local), format="imagexpress", wells=WELLS, sites=4, channels=2, z=2, size=128,
            seed=5, plate_name="S3Plate",
        )  # fmt: skip
        server.upload(local, PLATE, "instrument")
        server.enforce_auth()
        server.local_plate = local  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def blocks(s3, prefect_server):
    """A MinIO block for the instrument's bucket, an AWS block (no endpoint) for results."""
    from prefect_aws import AwsCredentials, MinIOCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    raw, res = s3.users["instrument"], s3.users["analysis"]
    MinIOCredentials(
        minio_root_user=raw.key,
        minio_root_password=raw.secret,
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=s3.endpoint),
    ).save("raw-store", overwrite=True)
    AwsCredentials(
        aws_access_key_id=res.key, aws_secret_access_key=res.secret, region_name="us-east-1"
    ).save("results-store", overwrite=True)
    fac = s3.users["facility"]
    AwsCredentials(
        aws_access_key_id=fac.key,
        aws_secret_access_key=fac.secret,
        aws_client_parameters=AwsClientParameters(endpoint_url=s3.endpoint),
    ).save("facility-store", overwrite=True)
    return {"results": {"credentials_block": "results-store", "endpoint_url": s3.endpoint}}


def _config(tmp: Path, name: str, out: str, workers: int = 2) -> str:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        f"num_workers: {workers}\n"
        f"path_planning_config: {{global_output_folder: {out}}}\n"
        # intermediates and checkpoints on the object store too, not only the final plate
        "vfs_config: {intermediate_backend: disk, materialization_backend: zarr}\n"
        "step_materialization_config: {enabled: true}\n"
        "execution_config: {retry_delay_seconds: 0}\n"
    )
    return str(cfg)


def _s3fs(s3, user: str):
    import s3fs

    return s3fs.S3FileSystem(**s3.options(user), skip_instance_cache=True)


def test_s3_plate_to_another_bucket_validates_and_equals_a_disk_run(s3, blocks, tmp_path):
    from prefect_hcs.runtime.flow import process_plate

    out = f"s3://{RESULTS}/clean"
    state = process_plate(
        plate=PLATE,
        global_config=_config(tmp_path, "s3", out),
        storage_options=RAW_OPTS,
        output_storage_options=blocks["results"],
        return_state=True,
    )
    assert state.is_completed(), state.message
    summary = state.result()
    zarr_url = f"{out}/S3Plate_hcs/S3Plate.ome.zarr"
    assert summary["output"] == zarr_url
    opts = s3.options("analysis")
    assert validate_plate(zarr_url, opts) == []  # yaozarrs, ome-zarr-models, ome-zarr-py, own

    fs = _s3fs(s3, "analysis")
    root = f"{RESULTS}/clean/S3Plate_hcs"
    names = fs.find(root)

    def names_in(folder: str) -> list[str]:
        return sorted(n.rsplit("/", 1)[-1] for n in fs.ls(f"{root}/{folder}"))

    assert names_in(".hcs-done") == [f"{w}.json" for w in WELLS]  # completion markers
    assert names_in(".hcs-thumbnails") == [f"{w}.png" for w in WELLS]
    assert any("/checkpoints/" in n and ".zarr/" in n for n in names)  # zarr checkpoints
    assert fs.exists(f"{root}/count_measurements.csv")
    assert not [n for n in names if ".tmp-" in n]
    # nothing was written next to the plate
    raw = _s3fs(s3, "instrument")
    assert sorted(raw.find(RAW)) == sorted(
        f"{RAW}/instrument-7/S3Plate/{p.relative_to(s3.local_plate).as_posix()}"
        for p in s3.local_plate.rglob("*")
        if p.is_file()
    )

    # the same plate from disk to disk gives the same pixels and the same tables
    disk_out = tmp_path / "disk"
    disk = process_plate(
        plate=str(s3.local_plate),
        global_config=_config(tmp_path, "disk", str(disk_out)),
        return_state=True,
    )
    assert disk.is_completed(), disk.message
    disk_zarr = str(disk_out / "S3Plate_hcs" / "S3Plate.ome.zarr")
    for w in WELLS:
        np.testing.assert_array_equal(
            read_well_image(zarr_url, w, 0, storage_options=opts), read_well_image(disk_zarr, w, 0)
        )
    assert (
        fs.cat_file(f"{root}/count_measurements.csv")
        == (disk_out / "S3Plate_hcs" / "count_measurements.csv").read_bytes()
    )


def test_objects_on_s3_labels_tables_and_the_ui_summary_use_the_output_options(
    s3, blocks, tmp_path, prefect_server
):
    """demo-objects into the results bucket: the Parquet tables and NGFF labels land there, and
    the per-well summary artifact (read back from the output with *its* credentials block, not
    the plate's) agrees with the plate table. Reading with the plate's options would be refused
    and the summary would silently show no objects."""
    import httpx
    import pandas as pd

    from prefect_hcs.runtime.flow import process_plate
    from prefect_hcs.runtime.ui_events import artifact_key

    out = f"s3://{RESULTS}/objects"
    state = process_plate(
        plate=PLATE,
        pipeline="demo-objects",
        global_config=_config(tmp_path, "objects", out),
        storage_options=RAW_OPTS,
        output_storage_options=blocks["results"],
        return_state=True,
    )
    assert state.is_completed(), state.message
    zarr_url = state.result()["output"]
    opts = s3.options("analysis")
    df = pd.read_parquet(f"{zarr_url}/tables/measure_objects.parquet", storage_options=opts)
    assert sorted(df["well"].unique()) == WELLS
    fs = _s3fs(s3, "analysis")
    root = zarr_url.removeprefix("s3://")
    assert all(fs.exists(f"{root}/{w[0]}/{int(w[1:])}/0/labels/nuclei/zarr.json") for w in WELLS)

    body = {
        "artifacts": {
            "flow_run_id": {"any_": [str(state.state_details.flow_run_id)]},
            "key": {"any_": [artifact_key("wells", "S3Plate")]},
        },
        "sort": "CREATED_DESC",
        "limit": 1,
    }
    (art,) = httpx.post(f"{prefect_server}/artifacts/filter", json=body).json()
    data = art["data"] if isinstance(art["data"], list) else json.loads(art["data"])
    rows = {r["well"]: r for r in data}
    for well, objs in df.groupby("well"):
        assert rows[well]["objects"] == len(objs), rows[well]
        assert rows[well]["mean_area_px"] == pytest.approx(objs["area"].mean(), abs=0.01)
        assert rows[well]["mean_intensity"] == pytest.approx(
            objs["intensity_mean_c1"].mean(), abs=0.01
        )


def test_cli_validates_the_output_on_s3_through_a_credentials_block(s3, blocks):
    zarr_url = f"s3://{RESULTS}/clean/S3Plate_hcs/S3Plate.ome.zarr"
    opts = json.dumps({"credentials_block": "results-store", "endpoint_url": s3.endpoint})
    out = subprocess.run(
        [CLI, "validate", zarr_url, "--storage-options", opts],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid OME-Zarr" in out.stdout


_RUNNER = """
import json, sys
from prefect_hcs.runtime.flow import process_plate
process_plate(plate=sys.argv[1], global_config=sys.argv[2], storage_options=json.loads(sys.argv[3]),
              output_storage_options=json.loads(sys.argv[4]))
"""


def test_sigkill_mid_run_on_s3_then_retry_skips_done_wells_and_equals_a_clean_run(
    s3, blocks, tmp_path
):
    from prefect_hcs.runtime.flow import process_plate

    out = f"s3://{RESULTS}/killed"
    cfg = _config(tmp_path, "kill", out, workers=1)
    fs = _s3fs(s3, "analysis")
    done_dir = f"{RESULTS}/killed/S3Plate_hcs/.hcs-done"
    args = [json.dumps(RAW_OPTS), json.dumps(blocks["results"])]
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, PLATE, cfg, *args],
        env=dict(os.environ), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def markers() -> list[str]:
        fs.invalidate_cache()
        try:
            return sorted(n.rsplit("/", 1)[-1][:-5] for n in fs.ls(done_dir) if n.endswith(".json"))
        except FileNotFoundError:
            return []

    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if len(markers()) >= 1:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no well completed within the time limit")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    done_before = markers()
    assert 1 <= len(done_before) < len(WELLS), done_before
    zarr_url = f"{out}/S3Plate_hcs/S3Plate.ome.zarr"
    field0 = {w: fs.find(f"{zarr_url[5:]}/{w[0]}/{int(w[1:])}", detail=True) for w in done_before}
    before = {w: {k: v["ETag"] for k, v in f.items()} for w, f in field0.items()}

    state = process_plate(
        plate=PLATE,
        global_config=cfg,
        storage_options=RAW_OPTS,
        output_storage_options=blocks["results"],
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert state.result()["wells_skipped"] == done_before
    fs.invalidate_cache()
    for w in done_before:  # not rewritten: every object of the field keeps its ETag
        after = fs.find(f"{zarr_url[5:]}/{w[0]}/{int(w[1:])}", detail=True)
        assert {k: v["ETag"] for k, v in after.items()} == before[w]
    opts = s3.options("analysis")
    assert validate_plate(zarr_url, opts) == []
    clean = f"s3://{RESULTS}/clean/S3Plate_hcs"
    if not fs.exists(clean[5:]):  # run alone: make the clean run here
        test_s3_plate_to_another_bucket_validates_and_equals_a_disk_run(s3, blocks, tmp_path)
    for w in WELLS:
        np.testing.assert_array_equal(
            read_well_image(zarr_url, w, 0, storage_options=opts),
            read_well_image(f"{clean}/S3Plate.ome.zarr", w, 0, storage_options=opts),
        )
    for name in ("count_measurements.csv", "stitch_tile_positions.csv"):
        assert fs.cat_file(f"{out[5:]}/S3Plate_hcs/{name}") == fs.cat_file(f"{clean[5:]}/{name}")


def test_resume_uses_etags_an_identical_reupload_keeps_a_well_a_changed_one_reruns_it(
    s3, blocks, tmp_path
):
    from prefect_hcs.runtime.flow import process_plate

    cfg = _config(tmp_path, "etag", f"s3://{RESULTS}/etag")
    kwargs = dict(
        plate=PLATE, global_config=cfg, storage_options=RAW_OPTS,
        output_storage_options=blocks["results"], return_state=True,
    )  # fmt: skip
    assert process_plate(**kwargs).is_completed()
    raw = _s3fs(s3, "instrument")
    planes = sorted(raw.find(PLATE[5:]))
    a01 = next(p for p in planes if "_A01_s1_w1" in p)
    b02 = next(p for p in planes if "_B02_s1_w1" in p)
    time.sleep(1.1)  # a new LastModified second: mtime-based resume would rerun A01
    raw.pipe_file(a01, raw.cat_file(a01))  # same bytes: same ETag
    changed = bytearray(raw.cat_file(b02))
    changed[-1] ^= 0xFF  # one pixel differs
    raw.pipe_file(b02, bytes(changed))
    again = process_plate(**kwargs)
    assert again.is_completed(), again.message
    assert again.result()["wells_skipped"] == ["A01", "A02", "B01"]


# -- bad input: one clear line at compile time --------------------------------------------------


def _compile_error(plate: str, opts: dict, out_opts: dict | None = None, cfg: str | None = None):
    from prefect_hcs.errors import UserFacingError
    from prefect_hcs.runtime.compile import compile_from_parameters

    with pytest.raises(UserFacingError) as info:
        compile_from_parameters(plate, "demo", cfg, None, opts, out_opts)
    return str(info.value)


def _one_clean_line(msg: str, s3) -> None:
    assert "\n" not in msg and "Traceback" not in msg and "botocore" not in msg
    for user in s3.users.values():
        assert user.secret not in msg


def test_missing_bucket_wrong_endpoint_and_refused_credentials_fail_at_compile(
    s3, blocks, tmp_path, prefect_server
):
    from prefect_aws import MinIOCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    # a bucket that does not exist (for a user allowed every bucket)
    msg = _compile_error("s3://no-such-bucket/P1", {"credentials_block": "facility-store"})
    assert "s3://no-such-bucket/P1" in msg and "does not exist" in msg
    _one_clean_line(msg, s3)
    # ... and for one allowed only its own: S3 answers "denied", the message says both
    msg = _compile_error("s3://no-such-bucket/P1", RAW_OPTS)
    assert "s3://no-such-bucket/P1" in msg and "does not exist or" in msg
    _one_clean_line(msg, s3)
    # nothing listens on that endpoint
    dead = f"http://127.0.0.1:{_closed_port()}"
    msg = _compile_error(PLATE, {**RAW_OPTS, "endpoint_url": dead})
    assert PLATE in msg and dead in msg and "endpoint_url" in msg
    _one_clean_line(msg, s3)
    # a wrong secret in the block
    raw = s3.users["instrument"]
    MinIOCredentials(
        minio_root_user=raw.key,
        minio_root_password="not-the-secret",
        aws_client_parameters=AwsClientParameters(endpoint_url=s3.endpoint),
    ).save("wrong-secret", overwrite=True)
    msg = _compile_error(PLATE, {"credentials_block": "wrong-secret"})
    assert PLATE in msg and "'wrong-secret'" in msg and "refused" in msg
    _one_clean_line(msg, s3)
    # valid keys, but for the other bucket: denied
    msg = _compile_error(PLATE, blocks["results"])
    assert PLATE in msg and "is denied to" in msg and "'results-store'" in msg
    _one_clean_line(msg, s3)
    # the output location is checked too, with the output's options, before any pixel is read
    cfg = _config(tmp_path, "bad-out", f"s3://{RESULTS}/x")
    msg = _compile_error(PLATE, RAW_OPTS, {"endpoint_url": s3.endpoint, **RAW_OPTS}, cfg)
    assert f"s3://{RESULTS}/x/S3Plate_hcs" in msg and "output" in msg and "is denied to" in msg
    _one_clean_line(msg, s3)
    # a block that does not exist
    msg = _compile_error(PLATE, {"credentials_block": "nope"})
    assert "'nope'" in msg and "prefect block ls" in msg


def test_cli_plan_prints_one_line_for_refused_credentials(s3, blocks, prefect_server):
    out = subprocess.run(
        [CLI, "plan", PLATE, "--storage-options", '{"credentials_block": "wrong-secret"}'],
        capture_output=True, text=True, timeout=180, env=dict(os.environ),
    )  # fmt: skip
    assert out.returncode != 0
    err = out.stderr.strip()
    assert "Traceback" not in err and PLATE in err and "refused" in err, err
    assert s3.users["instrument"].secret not in out.stdout + out.stderr


def test_secret_keys_appear_nowhere_in_prefect_or_plans(s3, blocks, tmp_path, prefect_server):
    """After the runs above and a run that fails on refused access (its error is logged): the
    secrets are not in the server's database, flow-run parameters or states, logs, artifacts,
    the server's log file or the compiled plan."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter
    from prefect.client.schemas.sorting import FlowRunSort, LogSort

    from prefect_hcs.runtime.compile import compile_from_parameters
    from prefect_hcs.runtime.flow import process_plate

    denied = process_plate(
        plate=PLATE,
        global_config=_config(tmp_path, "denied", f"s3://{RESULTS}/denied"),
        storage_options=RAW_OPTS,
        output_storage_options={**RAW_OPTS, "endpoint_url": s3.endpoint},  # not its bucket
        return_state=True,
    )
    assert denied.is_failed()

    secrets = [u.secret for u in s3.users.values()]
    plan = compile_from_parameters(
        PLATE, "demo", _config(tmp_path, "p", f"s3://{RESULTS}/plan"), None, RAW_OPTS,
        blocks["results"],
    )  # fmt: skip
    blob = plan.model_dump_json()
    assert "raw-store" in blob and "results-store" in blob
    texts = [blob]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200)
        assert any(r.parameters.get("output_storage_options") for r in runs)
        texts += [str(r.parameters) + str(r.state.message if r.state else "") for r in runs]
        offset = 0
        while logs := client.read_logs(
            LogFilter(), limit=200, offset=offset, sort=LogSort.TIMESTAMP_ASC
        ):
            texts += [lg.message for lg in logs]
            offset += len(logs)
    arts: list = []
    while page := httpx.post(
        f"{prefect_server}/artifacts/filter", json={"limit": 200, "offset": len(arts)}
    ).json():
        arts += page
    texts += [json.dumps(a) for a in arts]
    assert offset > 0 and arts
    home = Path(os.environ["PREFECT_HOME"]).parent  # the session's client and server homes
    db = [p for p in home.rglob("*.db*") if p.is_file()]
    assert db, "the server's SQLite database was not found"
    raw_db = b"".join(p.read_bytes() for p in db)
    texts += [p.read_text(errors="replace") for p in home.rglob("*.log") if p.is_file()]
    for secret in secrets:
        assert all(secret not in t for t in texts)
        assert secret.encode() not in raw_db


def _closed_port() -> int:
    from s3_server import free_port

    return free_port()
