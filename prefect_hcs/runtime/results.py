"""What a `run-steps` task returns to the flow: typed, so the flow and the monitor read fields, not keys.

Plain pydantic models (they cross process boundaries with Dask and SLURM, and pickle as such).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChunkOutcome", "WellStepRun"]


class WellStepRun(BaseModel):
    """One well's step that ran to completion."""

    model_config = ConfigDict(frozen=True)

    well: str
    step: str
    seconds: float = Field(description="Wall time of the step for this well.")
    tables: dict[str, int] = Field(default_factory=dict, description="{table: rows written}.")
    pid: int = Field(description="Process that ran it.")
    where: dict[str, Any] = Field(
        default_factory=dict, description="Host, process, Dask worker, SLURM job (clusters.where)."
    )


class ChunkOutcome(BaseModel):
    """The steps of a chunk of wells: the well steps that ran and the wells that failed (why, where)."""

    model_config = ConfigDict(frozen=True)

    results: tuple[WellStepRun, ...] = ()
    failures: dict[str, str] = Field(default_factory=dict, description="{well: reason}.")
    failed_steps: dict[str, str] = Field(
        default_factory=dict, description="{well: name of the step that failed}."
    )
    pid: int = Field(default=0, description="Process that ran the chunk.")
    peak_rss_mb: float = Field(default=0.0, description="That process's peak RSS so far (MB).")
