"""Resume: which wells of a plate are already complete and valid for exactly this plan.

No Prefect imports here.
"""

from __future__ import annotations

import json
from typing import Any

from prefect_hcs.pipeline.plan import PlatePlan, StepPlan
from prefect_hcs.runtime import io as hio
from prefect_hcs.runtime.plate_steps import stale_plate_results
from prefect_hcs.runtime.stores import zarr_options
from prefect_hcs.runtime.well_inputs import inputs_fingerprint
from prefect_hcs.runtime.well_outputs import done_marker_url, output_fingerprint


def _uses_any(plans: list[StepPlan], result_urls: set[str]) -> bool:
    """Whether any of a well's step plans reads one of these plate-level results."""
    return any(
        isinstance(ref, dict) and ref.get("url") in result_urls
        for p in plans
        for ref in p.metadata.values()
    )


def completed_wells(
    plan: PlatePlan, storage_options: dict[str, Any] | None = None
) -> dict[str, str]:
    """Wells whose outputs are complete and valid for exactly this plan and these inputs.

    A well counts as done when its completion marker names the same chain of step fingerprints
    and the same source-file fingerprint, every output it should have is present (OME-Zarr
    fields with metadata and all chunks, tables, checkpoints), and no plate-level result it used
    is stale (e.g. a flat-field whose sampled files changed in another well). Anything else is
    recomputed.
    """
    opts = dict(storage_options or {})  # the plate's
    out = dict(plan.output.storage_options)
    done: dict[str, str] = {}
    writer = None
    if plan.output.image_backend == "zarr" and plan.output.zarr_url:
        from prefect_hcs.formats.omezarr import OmeZarrPlateWriter

        writer = OmeZarrPlateWriter(plan.output.zarr_url, zarr_options(plan.output))
    stale = stale_plate_results(plan, opts) if plan.plate_steps else set()
    for well in plan.wells:
        plans = plan.plans_for(well)
        if stale and _uses_any(plans, stale):
            continue
        last, first = plans[-1], plans[0]
        marker_url = done_marker_url(plan.output, well)
        try:
            if not hio.exists(marker_url, out):
                continue
            marker = json.loads(hio.read_bytes(marker_url, out))
        except (OSError, ValueError):
            continue
        if marker.get("chain_fingerprint") != last.chain_fingerprint:
            continue
        if marker.get("outputs") != output_fingerprint(plan.output, well):
            continue
        try:
            if marker.get("inputs") != inputs_fingerprint(first, opts):
                continue
        except OSError:
            continue
        expected = [u for p in plans for u in p.special_outputs.values()]
        expected += [
            p.materialized_url
            for p in plans
            if p.materialized_url and p.materialized_backend != "zarr"
        ]
        if writer is None:
            expected.append(last.output_url)
        elif not all(
            writer.field_complete(well, f, check_chunks=True)
            for f in range(plan.output.fields_per_well)
        ):
            continue
        if all(hio.exists(u, out) for u in expected):
            done[well] = marker_url
    return done
