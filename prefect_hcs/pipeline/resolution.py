"""Phase 2 of the compiler, resolve layers: global → pipeline → step config, then what they select.

Resolves the base config and each step's once, picks the planes (`vfs_config.plane_source`), the
wells of the run and of each step's well filters, and fingerprints the selected source planes.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from prefect_hcs.config.resolver import ResolvedConfig, resolve
from prefect_hcs.formats.layout import PlateLayout
from prefect_hcs.pipeline import checks
from prefect_hcs.pipeline.discover import Discovery
from prefect_hcs.pipeline.plan import fingerprint_of
from prefect_hcs.pipeline.planes import select_planes
from prefect_hcs.pipeline.wells import WellFilterError, select_wells

__all__ = ["Resolution", "StepWells", "resolve_layers", "source_fingerprint"]


@dataclass(frozen=True)
class StepWells:
    """The wells a step's filters keep: where it runs, and where it writes checkpoints."""

    runs: frozenset[str]
    materializes: frozenset[str]


@dataclass(frozen=True)
class Resolution:
    """Resolved configs and the planes and wells they select."""

    base: ResolvedConfig
    per_step: tuple[ResolvedConfig, ...]
    layout: PlateLayout
    wells: tuple[str, ...]
    step_wells: tuple[StepWells, ...]
    source_fingerprint: str
    problems: tuple[str, ...]


def resolve_layers(
    found: Discovery, global_layer: BaseModel | None, pipeline_layer: BaseModel | None
) -> Resolution:
    """Phase 2: resolve every layer once; select planes and wells; report what cannot be used."""
    base = resolve(global_layer, pipeline_layer)
    per_step = tuple(resolve(global_layer, pipeline_layer, s.config) for s in found.steps)
    layout, _, problems = select_planes(found.layout, base, list(per_step))
    problems += checks.path_setting_problems(base, "", ("path_planning_config",))
    wells, more = run_wells(layout, base)
    problems += more
    step_wells = []
    for i, (step, resolved) in enumerate(zip(found.steps, per_step, strict=True)):
        selected, more = wells_of_step(wells, resolved, f"step {i} {step.name!r}")
        step_wells.append(selected)
        problems += more
    return Resolution(
        base=base,
        per_step=per_step,
        layout=layout,
        wells=wells,
        step_wells=tuple(step_wells),
        source_fingerprint=source_fingerprint(layout),
        problems=tuple(problems),
    )


def run_wells(layout: PlateLayout, base: ResolvedConfig) -> tuple[tuple[str, ...], list[str]]:
    """(wells of the run, problems): `well_filter_config` applied to the plate's wells."""
    field = "well_filter_config.well_filter"
    value = base.value(field)
    try:
        wells = select_wells(layout.wells, value, base.value("well_filter_config.well_filter_mode"))
    except WellFilterError as exc:
        return (), [f"{field}: {exc}"]
    if wells:
        return wells, []
    shown = ", ".join(layout.wells[:12]) + ("…" if len(layout.wells) > 12 else "")
    return (), [
        f"the well selection is empty: {field} = {value!r} ({base.source(field).describe()}) "
        f"matches none of the plate's wells ({shown})"
    ]


def wells_of_step(
    wells: tuple[str, ...], resolved: ResolvedConfig, where: str
) -> tuple[StepWells, list[str]]:
    """(wells a step runs on and checkpoints, problems) from its two well filters."""

    def pick(section: str) -> frozenset[str]:
        """The wells one filter section keeps."""
        mode = resolved.value(f"{section}.well_filter_mode")
        return frozenset(select_wells(wells, resolved.value(f"{section}.well_filter"), mode))

    try:
        return StepWells(
            runs=pick("step_well_filter_config"),
            materializes=pick("step_materialization_config"),
        ), []
    except WellFilterError as exc:
        return StepWells(runs=frozenset(wells), materializes=frozenset()), [f"{where}: {exc}"]


def source_fingerprint(layout: PlateLayout) -> str:
    """Which plate this is: its id, URL and selected plane index (not header metadata)."""
    images = [
        (r.well, r.site, r.channel, r.z, r.timepoint, r.path, r.projection) for r in layout.images
    ]
    return fingerprint_of({"plate": layout.plate_id, "url": layout.url, "images": images})
