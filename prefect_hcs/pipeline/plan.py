"""The frozen plans the compiler produces and tasks execute. Plain data, fingerprinted.

A `StepPlan` says everything a task needs for one well and one step: where to read, what to run,
where to write, with which backends and why. Tasks never consult configs or the environment to
decide a backend or a path; the same inputs give the same plans and fingerprints on any machine.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from prefect_hcs.config.enums import Backend, ZarrCompressor
from prefect_hcs.pipeline.model import Chain, Component, InputSource

#: Plate-level task runs of a plate run: compile-plan, prepare-outputs, check-completed,
#: finalize-outputs.
PLATE_TASKS = 4
_FILTER_KEYS = (".well_filter", ".well_filter_mode")


def fingerprint_of(data: Any) -> str:
    """Stable SHA-256 of JSON-able data (sorted keys, no whitespace)."""
    blob = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()


def _as_dict(model: Any) -> dict[str, Any]:
    return model if isinstance(model, dict) else model.model_dump(mode="json")


#: StepPlan fields every well of a step shares (hashed once per step).
STEP_FIELDS = (
    "plate_id",
    "step_index",
    "step_name",
    "function",
    "variable_components",
    "group_by",
    "input_source",
    "read_backend",
    "write_backend",
    "materialized_backend",
    "is_last",
    "config",
    "code_versions",
    "backend_reasons",
)
#: StepPlan fields of the well itself (with STEP_FIELDS: all but the fingerprints).
WELL_FIELDS = (
    "well",
    "applies",
    "metadata",
    "read_from",
    "source_planes",
    "output_dir",
    "output_url",
    "materialized_output_dir",
    "materialized_url",
    "special_outputs",
)
#: What a step that does not apply to a well leaves out of that well's fingerprint.
_PASS_THROUGH = ("function", "code_versions", "config", "variable_components", "group_by")


def step_content(step: dict[str, Any], applies: bool) -> dict[str, Any]:
    """The shared part of a step plan's fingerprinted content (`step` is its STEP_FIELDS as JSON).

    Well-filter settings are left out (they count through `applies`); so is what a step that
    does not apply to the well would have run.
    """
    if not applies:
        return {k: v for k, v in step.items() if k not in _PASS_THROUGH}
    config = {k: v for k, v in step["config"].items() if not k.endswith(_FILTER_KEYS)}
    return {**step, "config": config}


def plan_fingerprint(step_fingerprint: str, well: dict[str, Any]) -> str:
    """A step plan's fingerprint: the hash of its shared part and its well's own fields (JSON)."""
    return fingerprint_of({"step": step_fingerprint, "well": well})


class Frozen(BaseModel):
    """Base of every plan model: immutable, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class InputPlane(Frozen):
    """One source plane for a well: coordinates + the URL to read it from."""

    site: int
    channel: int
    z: int
    timepoint: int
    url: str


class StepPlan(Frozen):
    """One step for one well, fully resolved."""

    plate_id: str
    well: str
    step_index: int
    step_name: str
    function: Chain | dict[str, Chain]
    variable_components: tuple[Component, ...]
    group_by: Component | None
    input_source: InputSource
    applies: bool = Field(description="False when the step's well filter excludes this well.")
    metadata: dict[str, Any] = Field(description="Plate metadata injected into functions.")
    read_backend: Backend
    read_from: str | None = Field(description="Intermediate URL to read (None: source planes).")
    source_planes: tuple[InputPlane, ...] = ()
    write_backend: Backend
    output_dir: str
    output_url: str = Field(description="Where this step's output for this well goes.")
    materialized_backend: Backend
    materialized_output_dir: str | None
    materialized_url: str | None
    special_outputs: dict[str, str] = Field(default_factory=dict)
    is_last: bool
    config: dict[str, Any] = Field(description="Resolved config values used, with their source.")
    code_versions: dict[str, str] = Field(
        default_factory=dict,
        description="{function name: code version} (resume recomputes on change).",
    )
    backend_reasons: dict[str, str]
    fingerprint: str = ""
    chain_fingerprint: str = Field(
        default="", description="Hash of this well's step fingerprints up to this step (resume)."
    )

    def content(self) -> dict[str, Any]:
        """What the fingerprint covers: what this well's output of this step depends on.

        Split in the part every well of the step shares (``step``) and this well's own
        (``well``), so the compiler hashes the shared part once per step (`plan_fingerprint`).
        Well filters count only through their effect on this well (`applies`, the checkpoint
        URL), so narrowing a filter recomputes only the wells it drops or adds. A step that does
        not apply to the well passes its data through: its function, kwargs, code and config do
        not count for that well.
        """
        step = self.model_dump(mode="json", include=set(STEP_FIELDS))
        well = self.model_dump(mode="json", include=set(WELL_FIELDS))
        return {"step": step_content(step, self.applies), "well": well}

    def with_fingerprint(self) -> StepPlan:
        """This plan with `fingerprint` set from its `content`."""
        content = self.content()
        fp = plan_fingerprint(fingerprint_of(content["step"]), content["well"])
        return self.model_copy(update={"fingerprint": fp})

    def summary(self) -> dict[str, Any]:
        """The keys `prefect-hcs plan --json` promises, plus a few useful ones."""
        return {
            "well": self.well,
            "step": self.step_name,
            "step_index": self.step_index,
            "applies": self.applies,
            "read_backend": self.read_backend,
            "write_backend": self.write_backend,
            "materialized_backend": self.materialized_backend,
            "output_dir": self.output_dir,
            "materialized_output_dir": self.materialized_output_dir,
            "special_outputs": self.special_outputs,
            "backend_reasons": self.backend_reasons,
            "fingerprint": self.fingerprint,
        }


class ZarrSettings(Frozen):
    """How the OME-Zarr output is encoded (the resolved `zarr_config`)."""

    compressor: ZarrCompressor = Field(description="Chunk codec.")
    compression_level: int = Field(description="Codec level.")
    chunk_size: int = Field(description="Chunk edge in y and x (px).")


class OutputPlan(Frozen):
    """Where the run's durable outputs go."""

    root: str
    root_backend: Backend = Field(description="disk (any fsspec filesystem) or omero.")
    image_backend: Backend = Field(description="zarr (OME-Zarr plate) or omero (TIFF annotations).")
    zarr_url: str | None
    storage_options: dict[str, Any] = Field(default_factory=dict)
    tables: dict[str, str] = Field(description="{table name: URL of the plate-level CSV}.")
    fields_per_well: int
    field_shape: tuple[int, int] = Field(
        description="(y, x) of every output field; wells are padded to it so viewers can tile."
    )
    channel_names: tuple[str, ...]
    pixel_size_um: float | None = Field(description="Pixel size (µm); None: unknown, no unit.")
    z_spacing_um: float | None = Field(
        default=None, description="Distance between output z-planes (µm); None: unknown/projected."
    )
    time_interval_s: float | None = Field(
        default=None, description="Time between output timepoints (s); None: unknown/reduced."
    )
    channel_colors: tuple[str, ...] = Field(
        default=(), description="Display colour (RRGGBB) per output channel, from the wavelengths."
    )
    field_translations_um: dict[str, tuple[tuple[float, float], ...]] = Field(
        default_factory=dict,
        description="{well: (y, x) µm of each output field from its stage position, relative to "
        "the well's top-left-most field}; wells without positions are absent (no translation).",
    )
    absent_planes: dict[str, tuple[tuple[int, int, int, int], ...]] = Field(
        default_factory=dict,
        description="{well: (site, channel, z, timepoint) of source planes not acquired}: "
        "filled with zeros and recorded in the OME-Zarr field metadata.",
    )
    field_sites: tuple[int, ...] = Field(
        default=(),
        description="Source site of each output field when every site is its own field; "
        "() when fields are combined (e.g. stitched).",
    )
    zarr: ZarrSettings
    source_fingerprint: str
    done_dirs: dict[str, str] = Field(
        description="{well: folder of its completion marker (resume)}: on OMERO the well itself."
    )

    def done_dir(self, well: str) -> str:
        """Folder of `well`'s completion marker and, beside it, its thumbnail folder."""
        return self.done_dirs[well]

    def field_metadata(self, well: str, field: int) -> dict[str, Any]:
        """Physical metadata of one output field, as `OmeZarrPlateWriter.write_field` kwargs."""
        translations = self.field_translations_um.get(well)
        site = self.field_sites[field] if field < len(self.field_sites) else None
        absent = [
            {"site": s, "channel": c, "z": z, "timepoint": t}
            for s, c, z, t in self.absent_planes.get(well, ())
            if site is None or s == site
        ]
        return {
            "pixel_size_um": self.pixel_size_um,
            "z_step_um": self.z_spacing_um,
            "time_interval_s": self.time_interval_s,
            "translation_um": translations[field] if translations else None,
            "channel_colors": list(self.channel_colors) or None,
            "absent_planes": absent,
        }


class PlatePlan(Frozen):
    """Every step plan of a plate run, the chunking of wells into tasks, and the outputs."""

    plate_id: str
    plate_url: str
    plate_format: str
    storage_options: dict[str, Any] = Field(default_factory=dict)
    pipeline_name: str
    pipeline: dict[str, Any]
    wells: tuple[str, ...]
    steps: tuple[str, ...]
    chunks: tuple[tuple[str, ...], ...]
    intermediates_in_memory: bool
    task_runner: str
    dask_address: str | None = Field(
        default=None, description="Existing Dask scheduler the step tasks go to (task_runner dask)."
    )
    slurm_cluster: str | None = Field(
        default=None, description="hcs-slurm-cluster block the jobs are submitted with (slurm)."
    )
    num_workers: int
    retries: int
    retry_delay_seconds: float
    output: OutputPlan
    resolved_config: dict[str, dict[str, Any]] = Field(
        description="{step name: resolved config JSON with sources}."
    )
    step_plans: tuple[StepPlan, ...]
    plate_steps: tuple[Any, ...] = Field(
        default=(), description="Plate-level steps run before the wells (pipeline.plate_steps)."
    )
    warnings: tuple[str, ...] = ()
    layout: dict[str, Any] = Field(
        default_factory=dict, description="What the plate handler found: formats.report."
    )
    fingerprint: str = ""

    def plans_for(self, well: str) -> list[StepPlan]:
        """The step plans of one well, in step order."""
        return [p for p in self.step_plans if p.well == well]

    def plan(self, well: str, step_index: int) -> StepPlan:
        """The plan of one (well, step); KeyError if there is none."""
        for p in self.step_plans:
            if p.well == well and p.step_index == step_index:
                return p
        raise KeyError((well, step_index))

    @property
    def task_count(self) -> int:
        """Task runs of one plate run: one per chunk (it runs every step), plus the plate-level
        tasks."""
        return len(self.chunks) + PLATE_TASKS + (1 if self.plate_steps else 0)

    def fingerprints(self) -> dict[str, str]:
        """{"<well>/<step>": fingerprint}: what workers publish and `plan` prints."""
        return {f"{p.well}/{p.step_name}": p.fingerprint for p in self.step_plans}

    def summary_json(self) -> dict[str, Any]:
        """What `prefect-hcs plan --json` prints."""
        return {
            "plate_id": self.plate_id,
            "plate_url": self.plate_url,
            "plate_format": self.plate_format,
            "pipeline": self.pipeline_name,
            "fingerprint": self.fingerprint,
            "wells": list(self.wells),
            "steps": list(self.steps),
            "chunks": [list(c) for c in self.chunks],
            "task_runs": self.task_count,
            "intermediates_in_memory": self.intermediates_in_memory,
            "output": self.output.model_dump(mode="json"),
            "warnings": list(self.warnings),
            "layout": self.layout,
            "resolved_config": self.resolved_config,
            "step_plans": [p.summary() for p in self.step_plans],
            "plate_steps": [
                {k: v for k, v in _as_dict(s).items() if k != "source_planes"}
                for s in self.plate_steps
            ],
        }
