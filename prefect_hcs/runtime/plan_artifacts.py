"""The plan's fingerprint artifacts: what end-to-end checks compare across machines and runs."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from prefect_hcs.pipeline.plan import PlatePlan
from prefect_hcs.runtime.ui_events import slug


def publish_fingerprints(plan: PlatePlan) -> None:
    """Fingerprint artifacts: what end-to-end checks compare across machines and runs."""
    create_markdown_artifact(
        _plan_markdown(plan),
        key=slug(f"plan-fingerprints-{plan.plate_id}"),
        description="Plan fingerprints (identical wherever the same inputs are compiled)",
    )
    create_table_artifact(
        fingerprint_rows(plan),
        key=fingerprints_key(plan.plate_id),
        description="Machine-readable fingerprints: the plan, then every well/step",
    )


def fingerprints_key(plate_id: str) -> str:
    """Artifact key of the full fingerprints table (what end-to-end checks read back)."""
    return slug(f"fingerprints-{plate_id}")


def fingerprint_rows(plan: PlatePlan) -> list[dict[str, str]]:
    """[{"item": "plan", ...}, {"item": "<well>/<step>", ...}]: full-length, unabridged."""
    rows = [{"item": "plan", "fingerprint": plan.fingerprint}]
    rows += [{"item": k, "fingerprint": v} for k, v in plan.fingerprints().items()]
    return rows


def _plan_markdown(plan: PlatePlan) -> str:
    lines = [
        f"# Plan of `{plan.plate_id}`",
        "",
        f"- plan fingerprint: `{plan.fingerprint}`",
        f"- pipeline: `{plan.pipeline_name}` · {len(plan.wells)} wells · {len(plan.steps)} steps "
        f"· {len(plan.chunks)} chunks · {plan.task_count} task runs",
        f"- output: `{plan.output.zarr_url or plan.output.root}`",
        f"- intermediates in memory: {plan.intermediates_in_memory}",
    ]
    if len(plan.step_plans) <= 400:
        lines += ["", "| well/step | fingerprint |", "|---|---|"]
        lines += [f"| {k} | `{v[:16]}` |" for k, v in plan.fingerprints().items()]
    return "\n".join(lines)
