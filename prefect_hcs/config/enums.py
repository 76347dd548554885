"""Enumerations shared by the config sections. String-valued so YAML, JSON and Block forms stay plain."""

from __future__ import annotations

from enum import StrEnum


class Backend(StrEnum):
    """Where a step reads from or writes to. `auto` is decided by the compiler from the plate source."""

    AUTO = "auto"
    DISK = "disk"
    MEMORY = "memory"
    ZARR = "zarr"
    OMERO = "omero"


class WellFilterMode(StrEnum):
    """Whether a well filter lists the wells to process or the wells to leave out."""

    INCLUDE = "include"
    EXCLUDE = "exclude"


class ZarrCompressor(StrEnum):
    """Chunk codec of the OME-Zarr output; `none` trades disk space for write speed."""

    ZSTD = "zstd"
    BLOSC = "blosc"
    GZIP = "gzip"
    NONE = "none"


class TaskRunnerKind(StrEnum):
    """Where the step tasks run. auto (the default) picks processes for several workers and
    threads otherwise (docs/scale-out.md); threads share the flow's process; processes run each
    chunk of wells in a worker process of a pool on this machine (the GIL does not serialise
    them); dask spreads wells over a Dask cluster (a LocalCluster, or an existing scheduler);
    slurm runs them in SLURM jobs (dask-jobqueue)."""

    AUTO = "auto"
    THREADS = "threads"
    PROCESSES = "processes"
    DASK = "dask"
    SLURM = "slurm"


class PlaneSource(StrEnum):
    """Which images of the plate the pipeline reads: the z-stack, or the instrument's projections."""

    STACK = "stack"
    PROJECTIONS = "projections"
