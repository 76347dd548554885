"""Concrete config sections with their class defaults (the bottom layer of every resolution).

Class relations follow OpenHCS so its users feel at home: `StepWellFilterConfig` is a
`WellFilterConfig`, and `StepMaterializationConfig` is both a `StepWellFilterConfig` and a
`PathPlanningConfig`, with the *static override* ``sub_dir = "checkpoints"``. A field a subclass
declares again in its own body with a different default is a static override: it wins over every
value inherited from base classes, for that field only (see `resolver.py`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from prefect_hcs.config.enums import (
    Backend,
    PlaneSource,
    TaskRunnerKind,
    WellFilterMode,
    ZarrCompressor,
)

WellFilter = list[str] | str | int


class ConfigSection(BaseModel):
    """Base of every section: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class VFSConfig(ConfigSection):
    """Backends for reading the plate, passing intermediates and materializing checkpoints."""

    read_backend: Backend = Field(
        default=Backend.AUTO, description="Backend the first step reads the plate with."
    )
    intermediate_backend: Backend = Field(
        default=Backend.AUTO,
        description="Where step outputs go between tasks: auto = memory when tasks share a process.",
    )
    materialization_backend: Backend = Field(
        default=Backend.AUTO,
        description="Where checkpoints go: auto = the plate source's own backend (omero for OMERO).",
    )
    plane_source: PlaneSource = Field(
        default=PlaneSource.STACK,
        description=(
            "Which images the pipeline reads: the z-stack, or the projections the instrument "
            "computed (MetaXpress). Set it for the whole pipeline, not per step."
        ),
    )


class WellFilterConfig(ConfigSection):
    """Which wells a stage applies to: a list, 'A01,B02', 'row:A', 'col:1-6', 'A01:A12', an int N
    (the first N wells) or 'all'."""

    well_filter: WellFilter | None = Field(default=None, description="Wells to include/exclude.")
    well_filter_mode: WellFilterMode = Field(
        default=WellFilterMode.INCLUDE, description="Include or exclude the filtered wells."
    )


class PathPlanningConfig(ConfigSection):
    """Where outputs go: `<global_output_folder or plate parent>/<plate><suffix>/<sub_dir>`."""

    output_dir_suffix: str = Field(default="_hcs", description="Appended to the plate name.")
    global_output_folder: str | None = Field(
        default=None, description="fsspec URL of a folder for all outputs (default: next to plate)."
    )
    sub_dir: str = Field(default="images", description="Folder inside the output plate root.")


class StepWellFilterConfig(WellFilterConfig):
    """The wells a step runs on (inherits the pipeline's well filter when unset)."""


class StepMaterializationConfig(StepWellFilterConfig, PathPlanningConfig):
    """Checkpoint a step's output to durable storage."""

    enabled: bool = Field(default=False, description="Write this step's output as a checkpoint.")
    sub_dir: str = Field(default="checkpoints", description="Checkpoint folder (static override).")


class ZarrConfig(ConfigSection):
    """How the OME-Zarr output is encoded."""

    compressor: ZarrCompressor = Field(default=ZarrCompressor.ZSTD, description="Chunk codec.")
    compression_level: int = Field(default=3, ge=0, le=22, description="Codec level.")
    chunk_size: int = Field(default=512, ge=16, le=8192, description="Chunk edge in y and x (px).")


class ExecutionConfig(ConfigSection):
    """How the flow runs tasks: runner, task granularity, retries for transient failures."""

    task_runner: TaskRunnerKind = Field(
        default=TaskRunnerKind.AUTO,
        description="Task runner: auto (processes for several workers, else threads), threads, "
        "processes, dask or slurm.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Existing Dask scheduler (tcp://host:8786) for task_runner dask; "
        "unset = a LocalCluster of num_workers processes.",
    )
    slurm_cluster: str | None = Field(
        default=None, description="Name of the hcs-slurm-cluster block for task_runner slurm."
    )
    max_task_runs: int = Field(
        default=200, ge=1, description="Upper bound of task runs per plate run (wells are chunked)."
    )
    retries: int = Field(default=2, ge=0, le=20, description="Retries for transient failures.")
    retry_delay_seconds: float = Field(default=2.0, ge=0, description="Base delay between retries.")


class LimitsConfig(ConfigSection):
    """Ceilings checked against the plate's declared geometry before any pixel is allocated."""

    max_plane_pixels: int = Field(
        default=16384 * 16384,
        ge=1,
        description="Largest plane accepted (y × x pixels); a TIFF header above it is refused.",
    )
    max_well_gib: float = Field(
        default=16.0,
        gt=0,
        description="Largest well accepted in memory (GiB): all its planes, or its stitched canvas.",
    )


class GlobalPipelineConfig(ConfigSection):
    """A fully resolved configuration: every field concrete. Also the class defaults."""

    num_workers: int = Field(default=2, ge=1, le=512, description="Wells processed in parallel.")
    vfs_config: VFSConfig = Field(default_factory=VFSConfig)
    path_planning_config: PathPlanningConfig = Field(default_factory=PathPlanningConfig)
    well_filter_config: WellFilterConfig = Field(default_factory=WellFilterConfig)
    step_well_filter_config: StepWellFilterConfig = Field(default_factory=StepWellFilterConfig)
    step_materialization_config: StepMaterializationConfig = Field(
        default_factory=StepMaterializationConfig
    )
    zarr_config: ZarrConfig = Field(default_factory=ZarrConfig)
    execution_config: ExecutionConfig = Field(default_factory=ExecutionConfig)
    limits_config: LimitsConfig = Field(default_factory=LimitsConfig)


#: section field name → its concrete class, in display order.
SECTIONS: dict[str, type[ConfigSection]] = {
    name: field.annotation
    for name, field in GlobalPipelineConfig.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, ConfigSection)
}
#: plain (non-section) fields of the root.
ROOT_FIELDS: tuple[str, ...] = tuple(
    name for name in GlobalPipelineConfig.model_fields if name not in SECTIONS
)
#: concrete class → its section name (each class appears once).
SECTION_OF: dict[type[ConfigSection], str] = {cls: name for name, cls in SECTIONS.items()}
