"""Processing functions for tests/test_process_pool.py, imported by its worker processes.

Only numpy and the registry here: a worker that imports this must not import Prefect with it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

from prefect_hcs.processing.registry import register


@register("note_worker", variable_components=("site",))
def note_worker(stack: np.ndarray, folder: str = "") -> np.ndarray:
    """Record which process ran a well and whether Prefect was imported there."""
    record = {"pid": os.getpid(), "prefect": "prefect" in sys.modules}
    (Path(folder) / f"{os.getpid()}.json").write_text(json.dumps(record))
    return stack


@register("die_once", variable_components=("site",))
def die_once(stack: np.ndarray, marker: str = "", always: bool = False) -> np.ndarray:
    """Kill this worker process (SIGKILL, as the kernel's OOM killer would) the first time."""
    path = Path(marker)
    if always or not path.exists():
        path.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return stack


@register("fail_in_worker", variable_components=("site",))
def fail_in_worker(stack: np.ndarray, well_marker: str = "") -> np.ndarray:
    """Raise a deterministic error (a bug, so a traceback is logged)."""
    raise ZeroDivisionError(f"planted failure {well_marker}")


@register("wait_in_worker", variable_components=("site",))
def wait_in_worker(stack: np.ndarray, folder: str = "", seconds: float = 60.0) -> np.ndarray:
    """Record this worker's pid, then wait (a long step to kill the flow under)."""
    import time

    (Path(folder) / f"{os.getpid()}.pid").write_text(str(os.getpid()))
    time.sleep(seconds)
    return stack
