"""The SLURM cluster Block: how plate runs submit their wells to SLURM (dask-jobqueue).

A run with `execution_config.task_runner: slurm` and `execution_config.slurm_cluster: <name>`
loads this block in the flow process, starts a Dask scheduler there and submits `jobs` SLURM
batch jobs, each one Dask worker (`dask_jobqueue.SLURMCluster`); the step tasks run in those
jobs, and the jobs are cancelled when the run ends. The block holds no secret: the prologue and
directives end up in plain job scripts, so a line that sets a password, token or key is refused.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, HttpUrl, field_validator

_DOCS = HttpUrl("https://github.com/prefect-hcs/prefect-hcs/blob/main/docs/scale-out.md#slurm")
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(B|[KMGT]i?B)$", re.IGNORECASE)
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY)", re.I)


class HcsSlurmCluster(Block):
    """SLURM jobs as Dask workers for prefect-hcs plate runs (partition, size, prologue)."""

    model_config = ConfigDict(extra="forbid")
    _block_type_name: ClassVar[str] = "HCS SLURM Cluster"
    _block_type_slug: ClassVar[str] = "hcs-slurm-cluster"
    _description: ClassVar[str] = (
        "Where and how big the SLURM jobs are that run prefect-hcs wells: partition, account, "
        "cores, memory, walltime, number of jobs and a job-script prologue (no secrets)."
    )
    _documentation_url: ClassVar[HttpUrl | None] = _DOCS
    _code_example: ClassVar[str] = (
        "```python\nfrom prefect_hcs.blocks.slurm import HcsSlurmCluster\n\n"
        'kwargs = HcsSlurmCluster.load("BLOCK_NAME").cluster_kwargs()\n```'
    )

    partition: str | None = Field(
        default=None, description="SLURM partition (sbatch -p); empty = the cluster's default."
    )
    account: str | None = Field(
        default=None, description="SLURM account to charge (sbatch -A); empty = your default."
    )
    cores: int = Field(default=1, ge=1, le=256, description="CPU cores per job (one worker).")
    memory: str = Field(default="4GB", description="Memory per job, e.g. 4GB or 16GiB.")
    walltime: str = Field(
        default="01:00:00", description="Time limit per job, HH:MM:SS or D-HH:MM:SS."
    )
    jobs: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Jobs (Dask workers) per plate run; empty = the run's num_workers.",
    )
    job_script_prologue: list[str] = Field(
        default_factory=list,
        description="Shell lines run before the worker starts, e.g. 'module load python'.",
    )
    job_extra_directives: list[str] = Field(
        default_factory=list,
        description="Extra #SBATCH options, e.g. '--qos=normal' or '--constraint=avx2'.",
    )
    python: str | None = Field(
        default=None,
        description="Python on the compute nodes with prefect-hcs installed; empty = this one.",
    )
    interface: str | None = Field(
        default=None,
        description="Network interface the scheduler and workers use (e.g. ib0); empty = any.",
    )
    log_directory: str | None = Field(
        default=None, description="Folder for the jobs' stdout/stderr; empty = SLURM's default."
    )
    local_directory: str | None = Field(
        default=None, description="Node-local scratch folder for the workers (e.g. /tmp)."
    )

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        if not _WALLTIME.match(value.strip()):
            raise ValueError(f"walltime {value!r} is not HH:MM:SS or D-HH:MM:SS (e.g. 02:00:00)")
        return value.strip()

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY.match(value.strip()):
            raise ValueError(f"memory {value!r} is not a size such as 4GB or 16GiB")
        return value.strip()

    @field_validator("job_script_prologue", "job_extra_directives")
    @classmethod
    def _no_secrets(cls, lines: list[str]) -> list[str]:
        for line in lines:
            if "=" in line and _SECRET_NAME.search(line.split("=", 1)[0]):
                raise ValueError(
                    f"{line.split('=', 1)[0].strip()!r} looks like a secret: job scripts are plain "
                    "text, so keep secrets in Prefect Secret or credentials blocks that the "
                    "tasks load themselves"
                )
        return lines

    def job_count(self, num_workers: int) -> int:
        """Jobs kept running for a plate run with `num_workers` (the block's `jobs` if set)."""
        return self.jobs or num_workers

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `dask_jobqueue.SLURMCluster` (the jobs are started by scaling).

        Workers retire themselves 5 minutes before the walltime (`--lifetime`, staggered), so
        SLURM never kills one mid-task; adaptive scaling then submits a replacement job.
        """
        kwargs: dict[str, Any] = {
            "queue": self.partition,
            "account": self.account,
            "cores": self.cores,
            "processes": 1,
            "memory": self.memory,
            "walltime": self.walltime,
            "job_script_prologue": list(self.job_script_prologue),
            "job_extra_directives": list(self.job_extra_directives),
            "job_name": "prefect-hcs",
        }
        if (seconds := _seconds(self.walltime)) > 15 * 60:
            lifetime = f"{(seconds - 5 * 60) // 60}m"
            kwargs["worker_extra_args"] = ["--lifetime", lifetime, "--lifetime-stagger", "2m"]
        optional = {
            "python": self.python,
            "interface": self.interface,
            "log_directory": self.log_directory,
            "local_directory": self.local_directory,
        }
        kwargs.update({k: v for k, v in optional.items() if v})
        return kwargs


def _seconds(walltime: str) -> int:
    """HH:MM:SS or D-HH:MM:SS (the forms the block accepts) as seconds."""
    days, _, clock = walltime.rpartition("-")
    hours, minutes, secs = (int(x) for x in clock.split(":"))
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + secs
