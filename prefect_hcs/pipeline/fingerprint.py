"""Phase 7 of the compiler, fingerprint: freeze the drafts into `StepPlan`s and the `PlatePlan`.

A step plan's fingerprint is `plan_fingerprint` of its shared part (hashed once per step and
`applies`) and its well's own fields; the chain fingerprint of a (well, step) hashes the well's
fingerprints up to that step (resume recomputes from the first changed step on). The result
equals `StepPlan.with_fingerprint` field for field, only without dumping every plan through
pydantic (a test holds the two equal).
"""

from __future__ import annotations

from typing import Any

from prefect_hcs.formats.compact import share_fields_sets
from prefect_hcs.pipeline.backends import Backends
from prefect_hcs.pipeline.discover import Discovery
from prefect_hcs.pipeline.paths import PlannedPaths
from prefect_hcs.pipeline.plan import (
    STEP_FIELDS,
    WELL_FIELDS,
    PlatePlan,
    StepPlan,
    fingerprint_of,
    plan_fingerprint,
    step_content,
)
from prefect_hcs.pipeline.resolution import Resolution
from prefect_hcs.pipeline.shapes import PipelineCheck

__all__ = ["fingerprint_plan", "fingerprint_steps", "freeze"]


def fingerprint_steps(
    steps: list[dict[str, Any]],
    drafts: list[dict[str, Any]],
    source_json: dict[str, list[dict[str, Any]]],
) -> tuple[StepPlan, ...]:
    """The step plans, fingerprinted: `steps` holds each step's shared fields, `drafts` (well-major,
    steps in order) each well's own and its ``step_index``, `source_json` each well's source
    planes as JSON.

    One plan per step is validated in full; the others are copies of it with their well's fields
    (already typed by the phases that made them), which keeps 4,000 plans fast. Plans share
    their fields sets (`share_fields_sets`), which keeps them small.
    """
    templates: dict[int, StepPlan] = {}
    shared: dict[tuple[int, bool], str] = {}
    chain: dict[str, str] = {}
    plans = []
    for d in drafts:
        i, well = d["step_index"], {k: d[k] for k in WELL_FIELDS}
        if i not in templates:
            templates[i] = StepPlan(**steps[i], **well)
        if (i, d["applies"]) not in shared:
            dumped = templates[i].model_dump(mode="json", include=set(STEP_FIELDS))
            shared[i, d["applies"]] = fingerprint_of(step_content(dumped, d["applies"]))
        planes = source_json[d["well"]] if d["source_planes"] else []
        fp = plan_fingerprint(shared[i, d["applies"]], {**well, "source_planes": planes})
        prev = chain.get(d["well"], "") if i else ""
        chain[d["well"]] = fingerprint_of([prev, fp])
        update = {**well, "fingerprint": fp, "chain_fingerprint": chain[d["well"]]}
        plans.append(templates[i].model_copy(update=update))
    return share_fields_sets(plans)


def fingerprint_plan(plan: PlatePlan) -> PlatePlan:
    """`plan` with its fingerprint: everything but the step plans, plus their fingerprints."""
    content = plan.model_dump(mode="json", exclude={"fingerprint", "step_plans"})
    content["step_fingerprints"] = [p.fingerprint for p in plan.step_plans]
    return plan.model_copy(update={"fingerprint": fingerprint_of(content)})


def freeze(
    found: Discovery,
    res: Resolution,
    checked: PipelineCheck,
    chosen: Backends,
    paths: PlannedPaths,
    chunks: tuple[tuple[str, ...], ...],
) -> PlatePlan:
    """Phase 7: the plate plan from what the phases decided, step plans and all fingerprinted."""
    base = res.base
    plan = PlatePlan(
        plate_id=res.layout.plate_id,
        plate_url=res.layout.url,
        plate_format=res.layout.format,
        storage_options=found.storage_options,
        pipeline_name=found.pipeline.name,
        pipeline=found.pipeline.to_data(),
        wells=res.wells,
        steps=tuple(s.name for s in found.steps),
        chunks=chunks,
        intermediates_in_memory=chosen.in_memory,
        task_runner=chosen.runner,
        dask_address=chosen.target.dask_address,
        slurm_cluster=chosen.target.slurm_cluster,
        num_workers=chosen.workers,
        retries=int(base.value("execution_config.retries")),
        retry_delay_seconds=float(base.value("execution_config.retry_delay_seconds")),
        output=paths.output,
        resolved_config={
            s.name: r.to_json() for s, r in zip(found.steps, res.per_step, strict=True)
        },
        step_plans=fingerprint_steps(paths.steps, paths.drafts, paths.source_json),
        plate_steps=paths.plate_steps,
        warnings=(*found.warnings, *checked.warnings),
        layout=found.report,
    )
    return fingerprint_plan(plan)
