"""A real single-node SLURM cluster for tests: munged, slurmctld and slurmd on this host.

Debian's `slurm-wlm` and `munge` packages (`.ci/run` installs them). Everything — key, sockets,
state, spool, logs, `slurm.conf` — lives in one private folder; the daemons run in the foreground
as child processes on free loopback ports, with no cgroups (proctrack/linuxproc, task/none), so
they start inside containers. Clients find the cluster through `SLURM_CONF` (see `env`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch")


def unavailable_reason() -> str | None:
    """Why a local SLURM cannot be started here, or None when it can."""
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    """This host as a SLURM node, as slurmd itself reports it (`slurmd -C`)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    line = out.splitlines()[0]
    return f"{line} NodeAddr=127.0.0.1 State=UNKNOWN"


class LocalSlurm:
    """Start, query and stop a one-node SLURM cluster rooted at `root`."""

    def __init__(self, root: Path, partition: str = "hcs"):
        self.root = root
        self.partition = partition
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """What clients (sbatch, squeue, dask-jobqueue) need in their environment."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 90) -> LocalSlurm:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(exist_ok=True)
        self._start_munge()
        node = _node_line()
        self.node = node.split()[0].split("=", 1)[1]
        self.conf.write_text(self._slurm_conf(node))
        env = {**os.environ, **self.env}
        for cmd in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            log = open(self.root / f"{cmd[0]}.out", "ab")  # noqa: SIM115 - owned by the child
            self.procs.append(
                subprocess.Popen(
                    cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )  # fmt: skip
            )
        self._wait_idle(timeout)
        return self

    def _start_munge(self) -> None:
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = self.root / "munge.socket"
        self.procs.append(
            subprocess.Popen(
                [
                    "munged",
                    "-F",
                    "-f",
                    f"--key-file={key}",
                    f"--socket={sock}",
                    f"--pid-file={self.root / 'munged.pid'}",
                    f"--log-file={self.root / 'munged.log'}",
                    f"--seed-file={self.root / 'munged.seed'}",
                ],  # fmt: skip
                stdout=subprocess.DEVNULL,
                stderr=open(self.root / "munged.out", "ab"),  # noqa: SIM115
                start_new_session=True,
            )
        )
        deadline = time.monotonic() + 20
        while not sock.exists():
            if time.monotonic() > deadline or self.procs[-1].poll() is not None:
                raise RuntimeError(f"munged did not start: {self._tail('munged.out')}")
            time.sleep(0.1)

    def _slurm_conf(self, node: str) -> str:
        r = self.root
        return "\n".join(
            [
                "ClusterName=hcstest",
                f"SlurmctldHost={self.node}(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                f"AuthInfo=socket={r / 'munge.socket'}",
                f"StateSaveLocation={r / 'state'}",
                f"SlurmdSpoolDir={r / 'spool'}",
                f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                f"SlurmdPidFile={r / 'slurmd.pid'}",
                f"SlurmctldLogFile={r / 'slurmctld.log'}",
                f"SlurmdLogFile={r / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "SchedulerType=sched/builtin",
                "MpiDefault=none",
                "ReturnToService=2",
                "SlurmctldTimeout=30",
                "SlurmdTimeout=30",
                "KillWait=5",
                node,
                f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def sinfo_states(self) -> list[str]:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.split() if out.returncode == 0 else []

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                self.stop()
                raise RuntimeError(f"{dead[0]} exited: {self._tail(f'{dead[0]}.log')}")
            if "idle" in self.sinfo_states():
                return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the node never became idle: {self._tail('slurmctld.log')}")

    def _tail(self, name: str) -> str:
        path = self.root / name
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (in that order)."""
        env = {**os.environ, **self.env}
        if self.procs:
            subprocess.run(["scancel", "--full", f"--partition={self.partition}"], env=env,
                           capture_output=True, timeout=20)  # fmt: skip
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        self.procs.clear()
