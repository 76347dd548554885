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
    """Threads share one process (intermediates stay in memory); dask spreads wells over processes
    (a LocalCluster, or an existing scheduler); slurm runs them in SLURM jobs (dask-jobqueue)."""

    THREADS = "threads"
    DASK = "dask"
    SLURM = "slurm"


class PlaneSource(StrEnum):
    """Which images of the plate the pipeline reads: the z-stack, or the instrument's projections."""

    STACK = "stack"
    PROJECTIONS = "projections"
