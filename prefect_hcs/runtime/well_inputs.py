"""A well's step input: its source planes, read between two fingerprints, or an intermediate.

Intermediates are `.npz` files (the array, its coordinates and the source fingerprint) used only
where a step's output is read by a step that does not run in the same chain. No Prefect here.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from prefect_hcs.pipeline.apply import AXES, WellData, assemble_planes
from prefect_hcs.pipeline.plan import StepPlan, fingerprint_of
from prefect_hcs.runtime import io as hio
from prefect_hcs.storage.object_store import file_stamp


def inputs_fingerprint(plan: StepPlan, storage_options: dict[str, Any]) -> str:
    """Identity of a well's source files: URL, size and stamp of every plane.

    The stamp is the version id or ETag on object stores, the mtime elsewhere (`file_stamp`). A
    replaced file changes it, so a retried run recomputes that well even if it had completed.
    """
    stamps = []
    for p in plan.source_planes:
        fs, path = hio.fs_for(p.url, storage_options)
        info = fs.info(path)
        stamps.append([p.url, info.get("size"), file_stamp(info)])
    return fingerprint_of(stamps)


def load_input(
    plan: StepPlan, storage_options: dict[str, Any], output_options: dict[str, Any]
) -> tuple[WellData, str]:
    """The step's input pixels and the fingerprint of the well's source files.

    Source planes are read with the plate's options, intermediates with the output's.
    """
    if plan.read_from is None:
        return _read_source(plan, storage_options)
    blob = hio.read_bytes(plan.read_from, output_options)
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        array = npz["array"]
        coords = {a: tuple(int(v) for v in npz[f"coords_{a}"]) for a in AXES}
        inputs_fp = str(npz["inputs_fp"]) if "inputs_fp" in npz.files else ""
    return WellData(array, coords), inputs_fp


class InputChangedError(RuntimeError):
    """A source file changed while it was read (a copy still in progress?). Retried."""

    transient = True


def _read_source(plan: StepPlan, storage_options: dict[str, Any]) -> tuple[WellData, str]:
    """Read the source planes between two fingerprints; they must agree.

    The fingerprint recorded for resume then describes exactly the bytes that were read: a plane
    replaced during (or after) the read makes the stamps differ, so the well is read again here,
    and a later resume recomputes it instead of trusting a stale output.
    """
    shape = plan.metadata.get("plane_shape")
    expect = (int(shape[0]), int(shape[1])) if shape else None
    for _ in range(3):
        before = inputs_fingerprint(plan, storage_options)
        planes = [
            (p, hio.read_source_plane(p.url, storage_options, expect)) for p in plan.source_planes
        ]
        if inputs_fingerprint(plan, storage_options) == before:
            return assemble_planes(planes), before
    raise InputChangedError(
        f"well {plan.well}: its source files kept changing while they were read (is the plate "
        "still being copied?). Retry the plate once the copy is complete."
    )


def save_intermediate(
    data: WellData, inputs_fp: str, url: str, storage_options: dict[str, Any]
) -> None:
    """Write a step's output as the `.npz` the next step (in another task or process) reads."""
    buf = io.BytesIO()
    arrays: dict[str, Any] = {"array": data.array, "inputs_fp": np.asarray(inputs_fp)}
    arrays |= {f"coords_{a}": np.asarray(data.coords[a], dtype=np.int64) for a in AXES}
    np.savez(buf, **arrays)
    hio.write_bytes(url, buf.getvalue(), storage_options)
