"""`run.py --profile`: where a plate run's CPU goes, the flow against the bare loop, by cost.

The bare loop and the `process-plate` flow (1 worker, real local Prefect server) each run under
[py-spy](https://github.com/benfred/py-spy) (`pip install py-spy`), sampling every thread and
child process; the Prefect server is sampled at the same time. Each on-CPU sample is charged to
one cost by its innermost frame that names one (`COSTS`, first match from the leaf), so the
table says what the flow spends above the bare loop and on what. Idle samples are not counted,
but a thread waiting for a core counts as busy: on a loaded machine every cost is inflated, so
compare the flow's and the bare loop's columns of the same run, not runs of different days.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 100  # samples per second

#: (cost, pattern on a frame "function (file:line)"), checked from the innermost frame outwards.
COSTS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern))
    for name, pattern in [
        ("imports (start-up)", r"_find_and_load|_call_with_frames_removed|exec_module"),
        ("intermediate hand-off (.npz)", r"save_intermediate|load_input \(|npyio"),
        ("thumbnails", r"thumbnails\.py"),
        ("padding (fit_yx)", r"fit_yx"),
        ("input stamps (fs.info)", r"inputs_fingerprint"),
        ("OME-Zarr writes", r"omezarr\w*\.py|zarr/|numcodecs"),
        ("read source TIFFs", r"read_source_plane|read_tiff|tifffile"),
        ("pipeline functions", r"processing/|apply\.py"),
        ("tables and markers", r"rows_to_csv|_write_tables|_write_done_marker|objects\.py"),
        ("UI: artifacts, progress", r"monitoring\.py|artifacts\.py"),
        ("compile", r"compiler\.py|compile\.py|pipeline/"),
        ("prefect: events client", r"prefect/events/"),
        ("prefect: logging", r"prefect/logging/|logging/__init__"),
        ("prefect: API client (HTTP)", r"prefect/client/|httpx|httpcore|anyio"),
        ("prefect: flow-run heartbeats", r"_send_heartbeats"),
        ("prefect: parameters (visit_collection)", r"visit_collection"),
        ("prefect: task/flow engine", r"prefect/"),
        ("pydantic (plans, models)", r"pydantic"),
    ]
]


def classify(stack: str) -> str:
    """The cost a collapsed py-spy stack ("outer;…;inner") is charged to."""
    frames = stack.split(";")
    if any(COSTS[0][1].search(f) for f in frames):
        return COSTS[0][0]
    for frame in reversed(frames):
        for name, pattern in COSTS:
            if pattern.search(frame):
                return name
    return "other (interpreter, asyncio, threads)"


def summarise(raw: Path) -> Counter[str]:
    """CPU seconds per cost from a py-spy `--format raw` file."""
    costs: Counter[str] = Counter()
    if not raw.exists():
        return costs
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            costs[classify(stack)] += int(count) / RATE
    return costs


def py_spy() -> str:
    exe = Path(sys.executable).with_name("py-spy")
    found = str(exe) if exe.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


def record(args: list[str], raw: Path, env: dict[str, str], server_pid: int | None) -> dict:
    """Run `run.py ARGS` under py-spy (and sample the server alongside); its JSON result."""
    spy = py_spy()
    server = None
    if server_pid:
        server = subprocess.Popen(
            [spy, "record", "--pid", str(server_pid), "--subprocesses", "--rate", str(RATE),
             "--format", "raw", "--output", str(raw.with_suffix(".server.txt")), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        out = subprocess.run(
            [spy, "record", "--subprocesses", "--threads", "--rate", str(RATE), "--format",
             "raw", "--output", str(raw), "--nonblocking", "--",
             sys.executable, str(Path(__file__).with_name("run.py")), *args],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
    finally:
        if server is not None:
            server.send_signal(2)  # SIGINT: py-spy writes what it has and exits
            server.wait(30)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def report(bare: Counter[str], flow: Counter[str], server: Counter[str], top: int = 14) -> str:
    """A table: CPU seconds per cost, bare loop vs flow, and the flow's excess."""
    names = sorted(set(bare) | set(flow), key=lambda k: -(flow[k] - bare[k]))
    lines = [f"  {'cost':<38} {'bare s':>8} {'flow s':>8} {'flow−bare':>10}"]
    for name in names[:top]:
        lines.append(
            f"  {name:<38} {bare[name]:8.2f} {flow[name]:8.2f} {flow[name] - bare[name]:+10.2f}"
        )
    lines.append(
        f"  {'total CPU (sampled)':<38} {sum(bare.values()):8.2f} {sum(flow.values()):8.2f} "
        f"{sum(flow.values()) - sum(bare.values()):+10.2f}"
    )
    lines.append(
        f"  {'Prefect server process (during flow)':<38} {'':>8} {sum(server.values()):8.2f}"
    )
    return "\n".join(lines)


def profile_plate(
    plate: Path, tmp: Path, env: dict[str, str], server_pid: int | None
) -> dict[str, Any]:
    """Profile the bare loop and the 1-worker flow on `plate`; the per-cost table as data."""
    raw_bare, raw_flow = tmp / "bare.raw.txt", tmp / "flow.raw.txt"
    bare_run = record(["_bare", str(plate), str(tmp)], raw_bare, env, None)
    flow_run = record(["_flow", str(plate), str(tmp), "1"], raw_flow, env, server_pid)
    bare, flow = summarise(raw_bare), summarise(raw_flow)
    server = summarise(raw_flow.with_suffix(".server.txt"))
    return {
        "bare_seconds": bare_run["seconds"],
        "flow_seconds": flow_run["seconds"],
        "bare_cpu": dict(bare),
        "flow_cpu": dict(flow),
        "server_cpu": dict(server),
        "table": report(bare, flow, server),
        "raw": [str(raw_bare), str(raw_flow)],
    }
