"""S3→S3 against disk→disk: the same plate, the same flow, on a loopback S3 API (moto server).

The plate is generated locally and uploaded to one bucket; the S3 run reads it from there and
writes every output to another bucket (credentials from a MinIOCredentials block), the disk run
reads and writes local files. Both run as `process-plate` flows with 2 workers against the same
real Prefect server, each in its own process. Throughput is wells per second; the ratio says
what object storage costs (moto is a single Python process: a real MinIO/S3 is faster, so this
is a pessimistic bound for the storage layer, not for the network).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BLOCK = "bench-s3"


def mode_flow_s3(plate: str, out: str, workers: int) -> dict[str, Any]:
    """One S3→S3 plate run in this process (called as `run.py _flow_s3 PLATE OUT WORKERS`)."""
    import tempfile

    from prefect_hcs.runtime.flow import process_plate

    opts = {"credentials_block": f"minio-credentials/{BLOCK}"}
    g = Path(tempfile.mkdtemp()) / "global.yaml"
    g.write_text(f"num_workers: {workers}\npath_planning_config: {{global_output_folder: {out}}}\n")
    t0 = time.perf_counter()
    state = process_plate(
        plate=plate,
        global_config=str(g),
        storage_options=opts,
        output_storage_options=opts,
        return_state=True,
    )
    seconds = time.perf_counter() - t0
    assert state.is_completed(), state.message
    return {"seconds": seconds, "inner_seconds": state.result()["seconds"]}


def bench_object_store(quick: bool, child: Any) -> dict[str, Any]:
    """Run both modes through `child(args, env)` (run.py's subprocess runner) and compare."""
    import os
    import tempfile

    sys.path.insert(0, str(HERE.parent / "tests"))
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_aws import MinIOCredentials
    from prefect_aws.client_parameters import AwsClientParameters
    from s3_server import User, start_s3_server

    from prefect_hcs.formats.wells import well_id
    from prefect_hcs.runtime.server import start_server
    from prefect_hcs.testing.synthetic import make_plate

    tmp = Path(tempfile.mkdtemp(prefix="hcs-bench-s3-"))
    n_wells, size = (6, 256) if quick else (24, 512)
    wells = [well_id(i // 6, i % 6) for i in range(n_wells)]
    plate = tmp / "S3Bench"
    make_plate(
        str(plate), format="imagexpress", wells=wells, sites=4, channels=2, z=3, size=size, seed=1
    )
    input_mb = sum(p.stat().st_size for p in plate.rglob("*") if p.is_file()) / 1e6
    s3 = start_s3_server(tmp / "moto.log")
    server = start_server(tmp / "prefect-home")
    env = dict(os.environ, PREFECT_API_URL=server.api_url, PREFECT_HOME=str(tmp / "client-home"),
               PREFECT_LOGGING_LEVEL="WARNING")  # fmt: skip
    try:
        admin = s3.admin_client()
        for bucket in ("bench-raw", "bench-out"):
            admin.create_bucket(Bucket=bucket)
        s3.users["bench"] = User("bench", "bench", "bench-secret")  # auth is not enforced here
        t0 = time.perf_counter()
        s3.upload(plate, "s3://bench-raw/S3Bench", "bench")
        upload = time.perf_counter() - t0
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            MinIOCredentials(
                minio_root_user="bench",
                minio_root_password="bench-secret",
                region_name="us-east-1",
                aws_client_parameters=AwsClientParameters(endpoint_url=s3.endpoint),
            ).save(BLOCK, overwrite=True)
        disk = child(["_flow", str(plate), str(tmp), "2"], env)
        remote = child(["_flow_s3", "s3://bench-raw/S3Bench", "s3://bench-out", "2"], env)
    finally:
        server.stop()
        s3.stop()
    for r in (disk, remote):
        r["wells_per_second"] = n_wells / r["seconds"]
    return {
        "plate": f"{n_wells} wells × 4 sites × 2 ch × 3 z, {size}² ({input_mb:.0f} MB of TIFFs)",
        "upload_seconds": upload,
        "disk_to_disk": disk,
        "s3_to_s3": remote,
        "time_ratio": remote["seconds"] / disk["seconds"],
        "throughput_ratio": remote["wells_per_second"] / disk["wells_per_second"],
    }


def report(r: dict[str, Any]) -> None:
    """Print the comparison the way run.py prints its other sections."""
    print(f"object storage ({r['plate']}; moto S3 server on loopback, 2 workers):")
    for key, label in (("disk_to_disk", "disk → disk"), ("s3_to_s3", "S3 → S3")):
        m = r[key]
        print(f"  {label:<12} {m['seconds']:7.2f} s  {m['wells_per_second']:.2f} wells/s")
    print(
        f"  S3→S3 / disk→disk: time {r['time_ratio']:.2f}×, throughput "
        f"{r['throughput_ratio']:.2f}× (upload of the plate, not counted: "
        f"{r['upload_seconds']:.1f} s)"
    )
