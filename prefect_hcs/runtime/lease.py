"""One owner per output: a lease file in the output root, taken atomically, kept by a heartbeat.

A plate run writes `<output root>/.hcs-lease.json` before it touches anything else there. The file
names the flow run (id and name), the host, the pid (with the process start time, so a reused pid
is not mistaken for the owner) and a heartbeat refreshed every `ttl / 4` seconds. A second run
finds the file and is refused with a message naming the first; a lease whose owner is provably
gone (same host and its process is dead) or whose heartbeat is older than its time-out is stale,
and the next run takes it over.

Creation is atomic where the filesystem allows: on local disks the complete file is hard-linked
into place (fails if the name exists); elsewhere fsspec's `pipe_file(mode="create")` is used,
which object stores implement as a conditional write (s3fs: `If-None-Match`) and which the
in-memory filesystem implements with an exclusive open. Filesystems without either fall back to
fsspec's check-then-write, which leaves a narrow race between two runs started in the same
instant; every writer re-checks ownership before writing, which closes the window for outputs.

No Prefect here: the flow supplies the run identity (see `runtime/run_guard.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any

from prefect_hcs.errors import UserFacingError
from prefect_hcs.runtime import io as hio

LEASE_NAME = ".hcs-lease.json"
#: Seconds without a heartbeat after which a lease counts as abandoned (any host).
DEFAULT_TTL = 120.0
TTL_ENV = "PREFECT_HCS_LEASE_TTL_SECONDS"


class LeaseHeldError(UserFacingError):
    """Another live run owns the output."""


class LeaseLostError(UserFacingError):
    """This run's lease was taken over (its heartbeat stalled past the time-out): stop writing."""


def lease_ttl() -> float:
    """The lease time-out: `PREFECT_HCS_LEASE_TTL_SECONDS`, else 120 s."""
    try:
        return max(1.0, float(os.environ.get(TTL_ENV, DEFAULT_TTL)))
    except ValueError:
        return DEFAULT_TTL


def lease_url(output_root: str) -> str:
    """Where the lease of an output root lives."""
    return f"{output_root.rstrip('/')}/{LEASE_NAME}"


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process (clock ticks since boot), or None if unknown/gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def process_alive(pid: int, started: str | None) -> bool:
    """True if `pid` runs here and (when known) is the same process that took the lease."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    if started is None:
        return True
    now = process_start(pid)
    return now is None or now == started


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease file holds."""

    run_id: str
    run_name: str
    host: str
    pid: int
    pid_started: str | None
    acquired: float
    heartbeat: float
    ttl: float

    @classmethod
    def for_this_process(cls, run_id: str, run_name: str, ttl: float | None = None) -> LeaseInfo:
        """A lease for the calling process, stamped now."""
        now = time.time()
        pid = os.getpid()
        return cls(
            run_id, run_name, socket.gethostname(), pid, process_start(pid), now, now,
            ttl if ttl is not None else lease_ttl(),
        )  # fmt: skip

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why this lease is abandoned, or None if its owner may still be running."""
        now = time.time() if now is None else now
        if self.host == socket.gethostname() and not process_alive(self.pid, self.pid_started):
            return f"its process (pid {self.pid} on {self.host}) is gone"
        age = now - self.heartbeat
        if age > self.ttl:
            return f"its last heartbeat was {age:.0f} s ago (time-out {self.ttl:.0f} s)"
        return None

    def describe(self) -> str:
        """'flow run 'plate-P1' (<id>) on host h, pid 12, heartbeat 3 s ago'."""
        age = max(0.0, time.time() - self.heartbeat)
        return (
            f"flow run {self.run_name!r} ({self.run_id}) on host {self.host}, pid {self.pid}, "
            f"heartbeat {age:.0f} s ago"
        )

    def to_bytes(self) -> bytes:
        """The lease file's content (sorted JSON, so equal leases are equal bytes)."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseInfo:
        """Parse a lease file; leases written before ``run_name`` existed read as ''."""
        raw = json.loads(data)
        return cls(
            str(raw["run_id"]), str(raw.get("run_name", "")), str(raw["host"]), int(raw["pid"]),
            raw.get("pid_started"), float(raw["acquired"]), float(raw["heartbeat"]),
            float(raw["ttl"]),
        )  # fmt: skip


def read_lease(url: str, storage_options: dict[str, Any] | None = None) -> LeaseInfo | None:
    """The lease at `url`; None if there is none. An unreadable file counts as a dead lease."""
    try:
        data = hio.read_bytes(url, storage_options)
    except FileNotFoundError:
        return None
    try:
        return LeaseInfo.from_bytes(data)
    except (ValueError, KeyError, TypeError):
        return LeaseInfo("?", "unreadable lease", "?", 0, None, 0.0, 0.0, 0.0)


def _create_exclusive(url: str, data: bytes, storage_options: dict[str, Any] | None) -> bool:
    """Create `url` holding `data` only if absent; False if it exists. Atomic where possible."""
    fs, path = hio.fs_for(url, storage_options)
    parent = path.rsplit("/", 1)[0]
    with hio.write_errors(url, len(data)):
        fs.makedirs(parent, exist_ok=True)
        if hio.is_local(fs):
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.link(tmp, path)  # atomic, and the file is complete when it appears
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return True
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True


def _discard_if_unchanged(url: str, stale: LeaseInfo, opts: dict[str, Any] | None) -> bool:
    """Remove a stale lease, unless it changed since it was judged (then another run has it)."""
    fs, path = hio.fs_for(url, opts)
    if hio.is_local(fs):
        aside = f"{path}.stale-{uuid.uuid4().hex[:12]}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True
        try:
            with open(aside, "rb") as fh:
                moved = fh.read()
            if _same_lease(moved, stale):
                return True
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)  # not the lease we judged: put it back
            return False
        finally:
            os.unlink(aside)
    if read_lease(url, opts) != stale:
        return False
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)
    return True


def _same_lease(data: bytes, lease: LeaseInfo) -> bool:
    try:
        return LeaseInfo.from_bytes(data) == lease
    except (ValueError, KeyError, TypeError):
        return lease.run_id == "?"


@dataclass(frozen=True)
class Takeover:
    """A stale lease a run took over, and why it was judged stale."""

    previous: LeaseInfo
    reason: str


class OutputLease:
    """A run's lease on one output root: `acquire`, then `start_heartbeat`, finally `release`."""

    def __init__(
        self, output_root: str, owner: LeaseInfo, storage_options: dict[str, Any] | None = None
    ) -> None:
        self.url = lease_url(output_root)
        self.owner = owner
        self.storage_options = dict(storage_options or {})
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Takeover | None:
        """Take the lease; return what was taken over from a dead run, if anything.

        Raises LeaseHeldError (naming the owner) when a live run holds it.
        """
        for _ in range(5):
            if _create_exclusive(self.url, self.owner.to_bytes(), self.storage_options):
                return None
            current = read_lease(self.url, self.storage_options)
            if current is None:
                continue  # released in between: try again
            if current.run_id == self.owner.run_id:
                self._write(self.owner)  # our own flow run, retried: refresh it
                return None
            reason = current.stale_reason()
            if reason is None:
                raise LeaseHeldError(
                    f"the output {self.url.rsplit('/', 1)[0]} is being written by "
                    f"{current.describe()}; a second run into it is refused. Wait for that run "
                    f"to finish (or cancel it: prefect flow-run cancel {current.run_id}), or "
                    "write this one elsewhere (path_planning_config.global_output_folder); if "
                    f"that process is gone, its lease expires {current.ttl:.0f} s after its "
                    "last heartbeat and the next run takes over."
                )
            if _discard_if_unchanged(self.url, current, self.storage_options) and _create_exclusive(
                self.url, self.owner.to_bytes(), self.storage_options
            ):
                return Takeover(current, reason)
        raise LeaseHeldError(
            f"could not take the lease {self.url}: other runs keep taking it. Retry the plate."
        )

    def _write(self, info: LeaseInfo) -> None:
        hio.write_bytes(self.url, info.to_bytes(), self.storage_options)

    def check(self) -> None:
        """Raise LeaseLostError unless the lease file still names this run."""
        current = read_lease(self.url, self.storage_options)
        if current is None or current.run_id != self.owner.run_id:
            who = current.describe() if current else "nobody (the lease file is gone)"
            raise LeaseLostError(
                f"this run lost its lease on {self.url.rsplit('/', 1)[0]} (now held by {who}); "
                "it stopped writing. Retry the plate once the other run is done."
            )

    def beat(self) -> None:
        """Refresh the heartbeat; remember (in `lost`) if another run took the lease."""
        try:
            self.check()
        except LeaseLostError as exc:
            self.lost = str(exc)
            self._stop.set()
            return
        self.owner = replace(self.owner, heartbeat=time.time())
        self._write(self.owner)

    def start_heartbeat(self) -> None:
        """Refresh the heartbeat every ttl/4 seconds from a daemon thread until `release`."""

        def loop() -> None:
            while not self._stop.wait(self.owner.ttl / 4):
                with contextlib.suppress(Exception):  # a missed beat is retried next time
                    self.beat()

        self._thread = threading.Thread(target=loop, name="hcs-lease-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = read_lease(self.url, self.storage_options)
        if current is not None and current.run_id == self.owner.run_id:
            with contextlib.suppress(FileNotFoundError):
                hio.delete(self.url, self.storage_options)


def check_owner(output_root: str, run_id: str, storage_options: dict[str, Any] | None) -> None:
    """For writers in any process: raise LeaseLostError unless `run_id` holds the output's lease."""
    url = lease_url(output_root)
    current = read_lease(url, storage_options)
    if current is None or current.run_id != run_id:
        who = current.describe() if current else "nobody (the lease file is gone)"
        raise LeaseLostError(
            f"this run does not hold the lease on {output_root} (held by {who}); it stopped "
            "before writing. Retry the plate once the other run is done."
        )
