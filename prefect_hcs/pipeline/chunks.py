"""Phase 6 of the compiler, chunk: which wells one task run processes."""

from __future__ import annotations

import math

from prefect_hcs.pipeline.plan import PLATE_TASKS

__all__ = ["chunk_wells"]


def chunk_wells(
    wells: tuple[str, ...], n_steps: int, max_task_runs: int, workers: int
) -> tuple[tuple[str, ...], ...]:
    """Split wells into contiguous chunks (one task runs one step over one chunk).

    Enough chunks to keep every worker busy with some load balancing (4 per worker), about 8
    wells per chunk on big plates so progress stays visible, and never more than the task-run
    budget allows (steps × chunks + the plate-level tasks ≤ max_task_runs): each task run costs
    ~10-60 ms of orchestration and the server records task runs asynchronously.
    """
    if not wells:
        return ()
    budget = max(1, (max_task_runs - PLATE_TASKS) // max(1, n_steps))
    wanted = max(4 * workers, math.ceil(len(wells) / 8))
    n = max(1, min(len(wells), budget, wanted))
    size = math.ceil(len(wells) / n)
    n = math.ceil(len(wells) / size)
    return tuple(tuple(wells[i * size : (i + 1) * size]) for i in range(n))
