"""Phase 1 of the compiler, discover: what the plate and the pipeline are, before any config.

Fits the built-in pipelines to the plate, keeps the enabled steps, indexes stage positions,
reports the layout as the handler found it, and refuses storage options that look like secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.formats.physical import StageIndex, stage_positions
from prefect_hcs.formats.report import layout_report
from prefect_hcs.pipeline.builtin import fit_to_plate
from prefect_hcs.pipeline.model import Pipeline, Step

__all__ = ["SECRET_KEYS", "Discovery", "discover", "secret_option_problems"]

#: Substrings of storage-option keys that mark a secret.
SECRET_KEYS = ("password", "passwd", "secret", "token", "key")


@dataclass(frozen=True)
class Discovery:
    """The plate and pipeline as given: enabled steps, layout report, stage index, warnings."""

    layout: PlateLayout
    pipeline: Pipeline
    steps: tuple[Step, ...]
    report: dict[str, Any]
    stage: StageIndex
    storage_options: dict[str, Any]
    warnings: tuple[str, ...]
    problems: tuple[str, ...]


def discover(
    layout: PlateLayout,
    pipeline: Pipeline,
    storage_options: dict[str, Any] | None,
    output_storage_options: dict[str, Any] | None,
) -> Discovery:
    """Phase 1: the enabled steps of `pipeline` (fitted to `layout`) and what the plate holds."""
    pipeline, fitted = fit_to_plate(pipeline, layout)  # the built-in demo plans on any plate
    steps = tuple(s for s in pipeline.steps if s.enabled)
    problems = secret_option_problems(storage_options) + secret_option_problems(
        output_storage_options
    )
    if not steps:
        problems.append("every step of the pipeline is disabled")
    return Discovery(
        layout=layout,
        pipeline=pipeline,
        steps=steps,
        report=layout_report(layout),
        stage=stage_positions(layout),
        storage_options=dict(storage_options or {}),
        warnings=(*layout.warnings, *fitted),
        problems=tuple(problems),
    )


def secret_option_problems(storage_options: dict[str, Any] | None) -> list[str]:
    """Storage-option keys that look like secrets (plans and run parameters are not secret)."""
    problems = []
    for key in storage_options or {}:
        if any(s in key.lower() for s in SECRET_KEYS):
            problems.append(
                f"storage option {key!r} looks like a secret; plans are published as artifacts. "
                "Put credentials in a Block (OmeroCredentials; AwsCredentials or "
                "MinIOCredentials for S3) and pass its name (credentials_block=...) instead"
            )
    return problems
