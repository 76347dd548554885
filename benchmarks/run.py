"""Benchmarks: `python benchmarks/run.py [--quick]`.

1. plate: the demo pipeline on one synthetic plate (24 wells × 4 sites × 2 channels × 3 z, 512²)
   run (a) as the `process-plate` flow against a real local Prefect server and (b) as a bare Python
   loop calling the same functions on the same files and writing the same outputs. Each mode runs
   in its own process; wall time and peak RSS are reported with their ratio to the bare loop.
2. compile: compiling 384 wells × 10 steps (no pixels read).
3. resolve: resolving every config field for 10 steps × 384 wells.
4. dask: a CPU-bound plate on 1 vs 2 `dask worker` processes (execution_config.dask_address);
   prints the speed-up (benchmarks/dask_workers.py).
5. s3: the same plate S3→S3 (moto server on loopback) against disk→disk, as a throughput ratio
   (`object_store.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- modes (subprocess)
def mode_bare(plate: str, out: str) -> dict:
    """The same pipeline as plain numpy calls: read TIFFs, process each well, write the outputs."""
    import numpy as np

    import prefect_hcs.processing  # noqa: F401
    from prefect_hcs.formats.detect import open_plate, read_tiff
    from prefect_hcs.formats.omezarr import OmeZarrPlateWriter
    from prefect_hcs.processing.background import tophat_background
    from prefect_hcs.processing.normalize import percentile_normalize
    from prefect_hcs.processing.projection import max_projection
    from prefect_hcs.processing.segmentation import count_nuclei
    from prefect_hcs.processing.stitching import stitch_tiles
    from prefect_hcs.runtime import io as hio

    t0 = time.perf_counter()
    layout = open_plate(plate)
    import fsspec

    fs = fsspec.filesystem("file")
    writer = OmeZarrPlateWriter(str(Path(out) / "bare.ome.zarr"))
    rows_out = layout.image_shape
    names = [layout.channel_names.get(c, f"ch{c}") for c in layout.channels]
    writer.initialize(plate_name="bare", wells=list(layout.wells), fields_per_well=1,
                      channel_names=names, pixel_size_um=layout.pixel_size_um,
                      source_fingerprint="bare")  # fmt: skip
    measurements = []
    nc, nz, ns = len(layout.channels), len(layout.z_planes), len(layout.sites)
    for well in layout.wells:
        arr = np.zeros((nc, nz, ns, *rows_out), dtype=np.uint16)
        for ref in layout.images_for_well(well):
            arr[ref.channel - 1, ref.z - 1, ref.site - 1] = read_tiff(fs, ref.path)
        proj = np.stack(
            [np.stack([max_projection(arr[c, :, s])[0] for s in range(ns)]) for c in range(nc)]
        )
        bg = np.stack([tophat_background(proj[c], radius=15) for c in range(nc)])
        norm = np.stack([percentile_normalize(bg[c], low=0.5, high=99.8) for c in range(nc)])
        stitched, _pos = stitch_tiles(norm, grid=layout.grid, overlap=layout.tile_overlap)
        _, tables = count_nuclei(stitched[0], min_area=20)
        measurements += [{"well": well, **r} for r in tables["measurements"]]
        writer.write_field(well, 0, stitched[:, 0][None, :, None], channel_names=names,
                           pixel_size_um=layout.pixel_size_um)  # fmt: skip
    writer.finalize()
    hio.write_bytes(str(Path(out) / "bare_measurements.csv"), hio.rows_to_csv(measurements))
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb()}


def mode_flow(plate: str, out: str, workers: int) -> dict:
    from prefect_hcs.runtime.flow import process_plate

    g = Path(out) / f"global-{workers}.yaml"
    g.write_text(
        f"num_workers: {workers}\npath_planning_config: {{global_output_folder: {out}, "
        f"output_dir_suffix: _w{workers}}}\n"
    )
    t0 = time.perf_counter()
    state = process_plate(plate=plate, global_config=str(g), return_state=True)
    seconds = time.perf_counter() - t0
    assert state.is_completed(), state.message
    return {
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "inner_seconds": state.result()["seconds"],
    }


def _child(args: list[str], env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- benchmarks
def bench_plate(quick: bool) -> dict:
    from prefect_hcs.formats.layout import well_id
    from prefect_hcs.runtime.server import start_server
    from prefect_hcs.testing.synthetic import make_plate

    tmp = Path(tempfile.mkdtemp(prefix="hcs-bench-"))
    n_wells, size = (6, 256) if quick else (24, 512)
    wells = [well_id(i // 6, i % 6) for i in range(n_wells)]
    plate = tmp / "BenchPlate"
    make_plate(
        str(plate), format="imagexpress", wells=wells, sites=4, channels=2, z=3, size=size, seed=1
    )
    server = start_server(tmp / "prefect-home")
    env = dict(os.environ, PREFECT_API_URL=server.api_url, PREFECT_HOME=str(tmp / "client-home"),
               PREFECT_LOGGING_LEVEL="WARNING")  # fmt: skip
    try:
        bare = _child(["_bare", str(plate), str(tmp)], env)
        flow1 = _child(["_flow", str(plate), str(tmp), "1"], env)
        flow2 = _child(["_flow", str(plate), str(tmp), "2"], env)
    finally:
        server.stop()
    data = {"plate": f"{n_wells} wells × 4 sites × 2 ch × 3 z, {size}²", "bare": bare,
            "flow_1_worker": flow1, "flow_2_workers": flow2}  # fmt: skip
    for key in ("flow_1_worker", "flow_2_workers"):
        data[key]["time_ratio"] = data[key]["seconds"] / bare["seconds"]
        data[key]["rss_ratio"] = data[key]["peak_rss_mb"] / bare["peak_rss_mb"]
    return data


def _bench_dask(quick: bool) -> dict:
    from dask_workers import bench_dask

    def env_for(api_url: str, tmp: Path) -> dict:
        return dict(os.environ, PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp / "client-home"),
                    PREFECT_LOGGING_LEVEL="WARNING")  # fmt: skip

    return bench_dask(quick, _child, env_for)


def bench_compile() -> dict:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from helpers import make_layout

    import prefect_hcs.processing  # noqa: F401
    from prefect_hcs.pipeline.compiler import compile_plate
    from prefect_hcs.pipeline.model import load_pipeline

    steps = [
        {"name": "project", "func": "max_projection", "variable_components": ["z"]},
        {"name": "bg", "func": "tophat_background"},
        {"name": "norm", "func": "percentile_normalize"},
        {"name": "bg2", "func": "rolling_ball_background"},
        {"name": "norm2", "func": "percentile_normalize"},
        {"name": "stitch", "func": "stitch_tiles"},
        {"name": "norm3", "func": "percentile_normalize"},
        {"name": "bg3", "func": "tophat_background"},
        {"name": "norm4", "func": "percentile_normalize"},
        {"name": "count", "func": {"1": "count_nuclei"}, "group_by": "channel"},
    ]
    pipeline = load_pipeline({"name": "bench", "steps": steps})
    layout = make_layout(384, sites=4, channels=2, z=3)
    compile_plate(layout, pipeline)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        plan = compile_plate(layout, pipeline)
        times.append(time.perf_counter() - t0)
    return {"wells": 384, "steps": len(steps), "step_plans": len(plan.step_plans), "task_runs": plan.task_count,
            "seconds_best": min(times), "seconds_all": times}  # fmt: skip


def bench_resolve() -> dict:
    from prefect_hcs.config import load_layer, resolve

    g = load_layer(
        {"vfs_config": {"materialization_backend": "disk"}, "num_workers": 4}, layer="global"
    )
    p = load_layer({"step_well_filter_config": {"well_filter": "row:A"}}, layer="pipeline")
    steps = [
        load_layer({"step_materialization_config": {"enabled": i % 2 == 0}}, layer="step")
        for i in range(10)
    ]
    t0 = time.perf_counter()
    for _well in range(384):
        for s in steps:
            resolve(g, p, s).to_json()
    naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in steps:
        resolve(g, p, s).to_json()
    per_step = time.perf_counter() - t0
    return {"resolutions": 3840, "seconds_every_well_and_step": naive,
            "seconds_once_per_step_as_compiled": per_step}  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        print(json.dumps(mode_bare(sys.argv[2], sys.argv[3])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_flow_s3":
        from object_store import mode_flow_s3

        print(json.dumps(mode_flow_s3(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_dask":
        from dask_workers import mode_dask

        print(json.dumps(mode_dask(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_flow":
        print(json.dumps(mode_flow(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="6 wells at 256² instead of 24 at 512²"
    )
    parser.add_argument("--only", choices=["plate", "compile", "resolve", "dask", "s3"])
    args = parser.parse_args()
    results: dict = {}
    if args.only in (None, "resolve"):
        results["resolve"] = r = bench_resolve()
        print(f"resolve: 3840 (well, step) resolutions {r['seconds_every_well_and_step']:.3f} s; "
              f"once per step (what the compiler does) {r['seconds_once_per_step_as_compiled'] * 1000:.2f} ms")  # fmt: skip
    if args.only in (None, "compile"):
        results["compile"] = c = bench_compile()
        print(f"compile: {c['wells']} wells × {c['steps']} steps = {c['step_plans']} plans, "
              f"{c['task_runs']} task runs, best {c['seconds_best']:.3f} s")  # fmt: skip
    if args.only in (None, "plate"):
        results["plate"] = p = bench_plate(args.quick)
        b = p["bare"]
        print(f"plate ({p['plate']}):")
        print(
            f"  bare numpy loop      {b['seconds']:7.2f} s  peak RSS {b['peak_rss_mb']:7.0f} MB  (1.00×)"
        )
        for key, label in (
            ("flow_1_worker", "flow, 1 worker"),
            ("flow_2_workers", "flow, 2 workers"),
        ):
            f = p[key]
            print(f"  {label:<20} {f['seconds']:7.2f} s  peak RSS {f['peak_rss_mb']:7.0f} MB  "
                  f"time {f['time_ratio']:.2f}×  memory {f['rss_ratio']:.2f}×")  # fmt: skip
    if args.only in (None, "dask"):
        results["dask"] = d = _bench_dask(args.quick)
        print(f"dask ({d['plate']}; {d['cpus']} CPUs, load {d['load_avg_before'][0]:.1f}): "
              f"1 worker {d['dask_1_worker']['seconds']:.2f} s, 2 workers "
              f"{d['dask_2_workers']['seconds']:.2f} s → speed-up {d['speedup']:.2f}×")  # fmt: skip
    if args.only in (None, "s3"):
        from object_store import bench_object_store, report

        results["s3"] = s3 = bench_object_store(args.quick, _child)
        report(s3)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    print(f"(saved {out / 'latest.json'})")


if __name__ == "__main__":
    main()
