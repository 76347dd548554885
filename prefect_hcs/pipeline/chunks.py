"""Phase 6 of the compiler, chunk: which wells one task run processes."""

from __future__ import annotations

import math

from prefect_hcs.pipeline.plan import PLATE_TASKS

__all__ = ["MAX_CHUNK_WELLS", "chunk_wells"]

#: Largest chunk on a big plate: the UI's progress moves at least every this many wells.
MAX_CHUNK_WELLS = 8


def chunk_wells(
    wells: tuple[str, ...], max_task_runs: int, workers: int
) -> tuple[tuple[str, ...], ...]:
    """Split wells into contiguous chunks; one task run runs every step over one chunk.

    With several workers, sizes shrink towards the end of the plate (guided scheduling): each
    chunk takes about the remaining wells / (2 × workers), at most `MAX_CHUNK_WELLS`, so the last
    chunks are single wells and the workers finish together instead of one waiting for
    another's last big chunk (24 wells on 2 workers: 6, 5, 4, 3, 2, 1, 1, 1, 1). Chunks run in
    this order, the big ones first. One worker has nothing to balance: chunks of
    `MAX_CHUNK_WELLS`. Never more chunks than the task-run budget allows (chunks + the plate-level tasks ≤
    `max_task_runs`): each task run costs ~15 ms of the flow's CPU and ~35 ms of the server's.
    """
    if not wells:
        return ()
    budget = max(1, max_task_runs - PLATE_TASKS)
    smallest = math.ceil(len(wells) / budget)  # chunks at least this big stay within budget
    chunks: list[tuple[str, ...]] = []
    start = 0
    while start < len(wells):
        left = len(wells) - start
        guided = math.ceil(left / (2 * workers)) if workers > 1 else MAX_CHUNK_WELLS
        size = min(left, max(smallest, min(MAX_CHUNK_WELLS, guided)))
        chunks.append(tuple(wells[start : start + size]))
        start += size
    return tuple(chunks)
