"""Benchmarks: `python benchmarks/run.py [--quick] [--repeat N]` (figures in README.md).

One run prints, each against a bare loop on the same data:
1. plate: the demo pipeline on one CPU-bound synthetic plate (24 wells × 4 sites × 2 channels ×
   3 z, 512²) as a bare Python loop calling the same functions on the same files and writing the
   same outputs, and as the `process-plate` flow against a real local Prefect server with 1
   worker, 2 thread workers (the default runner) and 2 process workers (a Dask LocalCluster).
   Each run is its own process; wall time, peak RSS and CPU are reported with ratios to the bare
   loop, and the 2-worker speed-up over 1 worker. `--repeat N` interleaves N rounds.
2. memory: peak RSS of the bare loop and the flow (1 worker) on 24 and 384 wells of small
   (96²) tiles: flow/bare and the growth from 24 to 384 wells.
3. compile: compiling 384 wells × 10 steps (no pixels read).
4. resolve: resolving every config field for 10 steps × 384 wells.
`--only plate|memory|compile|resolve` runs one of them; `--only dask` a CPU-bound plate on 1 vs
2 existing `dask worker` processes (benchmarks/dask_workers.py); `--only s3` the plate S3→S3 on a
loopback moto server against disk→disk (object_store.py). `--profile` instead samples the bare
loop and the 1-worker flow with py-spy and prints CPU seconds per cost (spy_profile.py).
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
from typing import Any

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- modes (subprocess)
def mode_bare(plate: str, out: str) -> dict:
    """The same pipeline as plain numpy calls: read TIFFs, process each well, write the outputs.

    The outputs are the flow's: the OME-Zarr plate, each well's measurements as CSV and as
    Parquet inside the plate, and the plate-level CSV and Parquet tables merged from them.
    """
    import numpy as np

    _import_work_modules()
    from prefect_hcs.formats.detect import open_plate, read_tiff
    from prefect_hcs.formats.omezarr import OmeZarrPlateWriter
    from prefect_hcs.formats.tables import merge_well_tables, table_url, write_table
    from prefect_hcs.processing.background import tophat_background
    from prefect_hcs.processing.normalize import percentile_normalize
    from prefect_hcs.processing.projection import max_projection
    from prefect_hcs.processing.segmentation import count_nuclei
    from prefect_hcs.processing.stitching import stitch_tiles
    from prefect_hcs.runtime import io as hio

    out = tempfile.mkdtemp(dir=out, prefix="bare-")  # a fresh output per run
    t0 = time.perf_counter()
    layout = open_plate(plate)
    import fsspec

    fs = fsspec.filesystem("file")
    zarr_url = str(Path(out) / "bare.ome.zarr")
    writer = OmeZarrPlateWriter(zarr_url)
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
        rows = [{"well": well, **r} for r in tables["measurements"]]
        hio.write_bytes(f"{out}/tables/count/{well}_measurements.csv", hio.rows_to_csv(rows))
        write_table(table_url(zarr_url, "count_measurements", well), rows)
        measurements += rows
        writer.write_field(well, 0, stitched[:, 0][None, :, None], channel_names=names,
                           pixel_size_um=layout.pixel_size_um)  # fmt: skip
    merge_well_tables(zarr_url, "count_measurements", list(layout.wells))
    writer.finalize()
    hio.write_bytes(str(Path(out) / "bare_measurements.csv"), hio.rows_to_csv(measurements))
    return {"seconds": time.perf_counter() - t0, **_usage()}


def _import_work_modules() -> None:
    """Import what both modes run before either starts its clock.

    The bare loop imports its modules (numpy, the processing functions and skimage, the TIFF
    reader, the OME-Zarr writer with zarr and ome-zarr, the Parquet tables with pyarrow) before
    timing; the flow imports the same ones lazily, inside its tasks, so without this its time
    carried ~2-4 s of imports the bare loop's did not. Both processes' CPU includes them.
    """
    import fsspec  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import prefect_hcs.processing  # noqa: F401
    from prefect_hcs.formats import detect, omezarr, tables  # noqa: F401
    from prefect_hcs.runtime import io  # noqa: F401


def _usage() -> dict:
    """Peak RSS (MB) of this process and its largest child; CPU seconds (user + sys) of both,
    this process's user and sys CPU and minor page faults (allocation shows as sys and faults)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "peak_rss_mb": me.ru_maxrss / 1024,
        "children_peak_rss_mb": kids.ru_maxrss / 1024,
        "cpu_seconds": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
        "cpu_user_seconds": me.ru_utime,
        "cpu_sys_seconds": me.ru_stime,
        "minor_faults": me.ru_minflt,
    }


def mode_flow(plate: str, out: str, workers: int, runner: str = "auto") -> dict:
    """The `process-plate` flow on `plate`; `runner` auto (the default), threads, processes, dask.

    With processes, the forkserver (which imports the pipeline modules for the workers) is
    started before the clock, as the other modes import those modules before it: the time it
    took is reported as ``forkserver_start_seconds`` (paid once per flow process).
    """
    from prefect_hcs.runtime.flow import process_plate

    _import_work_modules()
    extra: dict[str, Any] = {}
    if runner == "processes":
        from prefect_hcs.runtime import process_pool

        t0 = time.perf_counter()
        process_pool.warm_up()
        extra["forkserver_start_seconds"] = time.perf_counter() - t0
    out = tempfile.mkdtemp(dir=out, prefix=f"flow-{runner}{workers}-")  # never a resume
    g = Path(out) / "global.yaml"
    g.write_text(
        f"num_workers: {workers}\npath_planning_config: {{global_output_folder: {out}, "
        f"output_dir_suffix: _{runner}{workers}}}\nexecution_config: {{task_runner: {runner}}}\n"
    )
    t0 = time.perf_counter()
    state = process_plate(plate=plate, global_config=str(g), return_state=True)
    seconds = time.perf_counter() - t0
    assert state.is_completed(), state.message
    summary = state.result()
    workers_mb = [v for k, v in summary["worker_peak_rss_mb"].items() if int(k) != os.getpid()]
    return {"seconds": seconds, "inner_seconds": summary["seconds"], "task_runner":
            summary["task_runner"], "workers_peak_rss_mb": workers_mb, **extra, **_usage()}  # fmt: skip


def _server_cpu(pid: int | None) -> float:
    """CPU seconds used so far by the Prefect server process and its children (0 if unknown)."""
    try:
        import psutil

        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        return sum(sum(p.cpu_times()[:2]) for p in procs)
    except Exception:  # noqa: BLE001 - psutil missing or the process gone
        return 0.0


def _child(args: list[str], env: dict, server_pid: int | None = None) -> dict:
    server_before = _server_cpu(server_pid)
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["load_avg"] = round(os.getloadavg()[0], 2)
    data["server_cpu_seconds"] = round(_server_cpu(server_pid) - server_before, 2)
    return data


# ----------------------------------------------------------------------------- benchmarks
def _make_plate(tmp: Path, n_wells: int, size: int, name: str = "BenchPlate") -> Path:
    """A synthetic ImageXpress plate: `n_wells` × 4 sites × 2 ch × 3 z at `size`²."""
    from prefect_hcs.formats.wells import well_id
    from prefect_hcs.testing.synthetic import make_plate

    cols = 24 if n_wells > 96 else (12 if n_wells > 24 else 6)
    wells = [well_id(i // cols, i % cols) for i in range(n_wells)]
    plate = tmp / name
    make_plate(
        str(plate), format="imagexpress", wells=wells, sites=4, channels=2, z=3, size=size, seed=1
    )
    return plate


def _server_env(tmp: Path) -> tuple[Any, dict]:
    """A fresh local Prefect server, warmed up, and the environment pointing a child at it."""
    from prefect_hcs.runtime.server import start_server

    server = start_server(tmp / "prefect-home")
    env = dict(os.environ, PREFECT_API_URL=server.api_url, PREFECT_HOME=str(tmp / "client-home"),
               PREFECT_LOGGING_LEVEL="WARNING")  # fmt: skip
    _warm_up(tmp, env)
    return server, env


def _warm_up(tmp: Path, env: dict) -> None:
    """One flow run on a 1-well plate before anything is measured.

    A just-started server answers its first requests slowly (0.7 s for the first API call, up
    to 2 s for the first flow-run label update, measured): a long-lived server has paid that
    long before a plate runs, so the first measured flow must not.
    """
    plate = _make_plate(tmp / "warm-up", 1, 64, name="WarmUpPlate")
    _child(["_flow", str(plate), str(tmp / "warm-up"), "1"], env)


def bench_profile(quick: bool) -> dict:
    """py-spy over the bare loop and the 1-worker flow: CPU per cost (spy_profile.py)."""
    from spy_profile import profile_plate

    tmp = Path(tempfile.mkdtemp(prefix="hcs-profile-"))
    n_wells, size = (6, 256) if quick else (24, 512)
    plate = _make_plate(tmp, n_wells, size)
    server, env = _server_env(tmp)
    try:
        data = profile_plate(plate, tmp, env, server.pid)
    finally:
        server.stop()
    data["plate"] = f"{n_wells} wells × 4 sites × 2 ch × 3 z, {size}²"
    return data


def bench_plate(quick: bool, repeat: int = 1, wells: int | None = None) -> dict:
    """Bare loop and flow (1 worker; 2 as threads; 2 as processes) on one CPU-bound plate.

    The modes run one after another, `repeat` times interleaved (A/B/C/D, A/B/C/D…), each in its
    own process; the best time of each mode is kept (the least disturbed by other load).
    """
    tmp = Path(tempfile.mkdtemp(prefix="hcs-bench-"))
    n_wells, size = (6, 256) if quick else (24, 512)
    n_wells = wells or n_wells
    plate = _make_plate(tmp, n_wells, size)
    server, env = _server_env(tmp)
    modes = {
        "bare": ["_bare", str(plate), str(tmp)],
        "flow_1_worker": ["_flow", str(plate), str(tmp), "1"],
        "flow_2_threads": ["_flow", str(plate), str(tmp), "2", "threads"],
        "flow_2_processes": ["_flow", str(plate), str(tmp), "2", "processes"],
        "flow_2_dask": ["_flow", str(plate), str(tmp), "2", "dask"],
    }
    runs: dict[str, list[dict]] = {k: [] for k in modes}
    try:
        for _ in range(repeat):
            for key, args in modes.items():
                runs[key].append(_child(args, env, server.pid))
    finally:
        server.stop()
    data: dict[str, Any] = {"plate": f"{n_wells} wells × 4 sites × 2 ch × 3 z, {size}²"}
    for key, rs in runs.items():
        data[key] = min(rs, key=lambda r: r["seconds"])
        data[key]["all_seconds"] = [round(r["seconds"], 2) for r in rs]
    bare = data["bare"]
    for key in list(modes)[1:]:
        data[key]["time_ratio"] = data[key]["seconds"] / bare["seconds"]
        data[key]["rss_ratio"] = data[key]["peak_rss_mb"] / bare["peak_rss_mb"]
    for runner in ("threads", "processes", "dask"):
        data[f"speedup_2_{runner}"] = (
            data["flow_1_worker"]["seconds"] / data[f"flow_2_{runner}"]["seconds"]
        )
    return data


def bench_memory(quick: bool) -> dict:
    """Peak RSS of the bare loop and the flow (1 worker) on a small and a large plate, small tiles."""
    sizes, tile = ((24, 96), 64) if quick else ((24, 384), 96)
    out: dict[str, Any] = {"tile": tile}
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix=f"hcs-mem{n}-"))
        plate = _make_plate(tmp, n, tile)
        server, env = _server_env(tmp)
        try:
            bare = _child(["_bare", str(plate), str(tmp)], env)
            flow = _child(["_flow", str(plate), str(tmp), "1"], env, server.pid)
        finally:
            server.stop()
        out[str(n)] = {"bare": bare, "flow": flow, "rss_ratio": flow["peak_rss_mb"] / bare["peak_rss_mb"],
                       "time_ratio": flow["seconds"] / bare["seconds"]}  # fmt: skip
    small, large = (out[str(n)] for n in sizes)
    out["wells"] = list(sizes)
    out["bare_growth"] = large["bare"]["peak_rss_mb"] / small["bare"]["peak_rss_mb"]
    out["flow_growth"] = large["flow"]["peak_rss_mb"] / small["flow"]["peak_rss_mb"]
    return out


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


def _machine() -> str:
    import platform

    return (f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.2f} at start")  # fmt: skip


def _print_plate(p: dict) -> None:
    b = p["bare"]
    print(f"plate ({p['plate']}), best of {len(b['all_seconds'])}:")
    print(f"  {'bare numpy loop':<24} {b['seconds']:7.2f} s  peak RSS {b['peak_rss_mb']:5.0f} MB"
          f"  CPU {b['cpu_seconds']:6.1f} s  (1.00×)  load {b['load_avg']:.1f}")  # fmt: skip
    for key, label in (("flow_1_worker", "flow, 1 worker"), ("flow_2_threads", "flow, 2 threads"),
                       ("flow_2_processes", "flow, 2 processes"), ("flow_2_dask", "flow, 2 Dask")):  # fmt: skip
        f = p[key]
        kids = ""
        if key == "flow_2_processes":
            kids = (f" (+ workers {', '.join(f'{m:.0f}' for m in f['workers_peak_rss_mb'])} MB;"
                    f" forkserver start {f['forkserver_start_seconds']:.1f} s before the clock)")  # fmt: skip
        elif key == "flow_2_dask":
            kids = f" (+ workers {f['children_peak_rss_mb']:.0f} MB each)"
        print(f"  {label:<24} {f['seconds']:7.2f} s  peak RSS {f['peak_rss_mb']:5.0f} MB  CPU "
              f"{f['cpu_seconds']:6.1f} s (server {f['server_cpu_seconds']:.1f} s)  time "
              f"{f['time_ratio']:.2f}×  memory {f['rss_ratio']:.2f}×"
              f"{kids}  load {f['load_avg']:.1f}")  # fmt: skip
    print(f"  flow/bare at 1 worker {p['flow_1_worker']['time_ratio']:.2f}× (goal ≤ 1.05); 2-worker "
          f"speed-up: processes (the default) {p['speedup_2_processes']:.2f}×, threads "
          f"{p['speedup_2_threads']:.2f}×, Dask {p['speedup_2_dask']:.2f}× (goal ≥ 1.8)")  # fmt: skip


def _print_memory(m: dict) -> None:
    print(f"memory (peak RSS, {m['tile']}² tiles, flow with 1 worker):")
    for n in m["wells"]:
        r = m[str(n)]
        print(f"  {n:4d} wells: bare {r['bare']['peak_rss_mb']:5.0f} MB ({r['bare']['seconds']:.1f} s), "
              f"flow {r['flow']['peak_rss_mb']:5.0f} MB ({r['flow']['seconds']:.1f} s)  "
              f"flow/bare {r['rss_ratio']:.2f}× (goal ≤ 1.1)  load {r['flow']['load_avg']:.1f}")  # fmt: skip
    a, b = m["wells"]
    print(
        f"  growth {a} → {b} wells: bare {m['bare_growth']:.2f}×, flow {m['flow_growth']:.2f}× (goal: flat)"
    )


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
        print(json.dumps(mode_flow(sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:6])))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="6 wells at 256² instead of 24 at 512² (and smaller memory plates)",
    )
    parser.add_argument("--only", choices=["plate", "memory", "compile", "resolve", "dask", "s3"])
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs of each plate mode")
    parser.add_argument(
        "--wells", type=int, default=None, help="wells of the plate benchmark (default 24; 6 quick)"
    )
    parser.add_argument(
        "--profile", action="store_true",
        help="instead: py-spy over the bare loop and the 1-worker flow, CPU seconds per cost",
    )  # fmt: skip
    args = parser.parse_args()
    results: dict = {"machine": _machine()}
    print(f"machine: {results['machine']}")
    if args.profile:
        results["profile"] = prof = bench_profile(args.quick)
        print(f"profile ({prof['plate']}): bare {prof['bare_seconds']:.2f} s, flow (1 worker) "
              f"{prof['flow_seconds']:.2f} s; CPU seconds by cost (py-spy samples):")  # fmt: skip
        print(prof["table"])
    default = not args.profile and args.only is None
    if default or args.only == "resolve":
        results["resolve"] = r = bench_resolve()
        print(f"resolve: 3840 (well, step) resolutions {r['seconds_every_well_and_step']:.3f} s; "
              f"once per step (what the compiler does) {r['seconds_once_per_step_as_compiled'] * 1000:.2f} ms")  # fmt: skip
    if default or args.only == "compile":
        results["compile"] = c = bench_compile()
        print(f"compile: {c['wells']} wells × {c['steps']} steps = {c['step_plans']} plans, "
              f"{c['task_runs']} task runs, best {c['seconds_best']:.3f} s (goal < 0.2 s)")  # fmt: skip
    if default or args.only == "plate":
        results["plate"] = bench_plate(args.quick, args.repeat, args.wells)
        _print_plate(results["plate"])
    if default or args.only == "memory":
        results["memory"] = bench_memory(args.quick)
        _print_memory(results["memory"])
    if args.only == "dask":
        results["dask"] = d = _bench_dask(args.quick)
        print(f"dask ({d['plate']}; {d['cpus']} CPUs, load {d['load_avg_before'][0]:.1f}): "
              f"1 worker {d['dask_1_worker']['seconds']:.2f} s, 2 workers "
              f"{d['dask_2_workers']['seconds']:.2f} s → speed-up {d['speedup']:.2f}×")  # fmt: skip
    if args.only == "s3":
        from object_store import bench_object_store, report

        results["s3"] = s3 = bench_object_store(args.quick, _child)
        report(s3)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    print(f"(saved {out / 'latest.json'})")


if __name__ == "__main__":
    main()
