"""Plain domain types shared by every layer of ds01q.

Nothing here imports from the rest of the package.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

JobId = NewType("JobId", int)
SliceUuid = NewType("SliceUuid", str)


class JobState(str, enum.Enum):
    """Slurm's state names, plus STARTING (slices reserved, container not yet up) and
    STOPPING (a stop was requested; the container is being stopped)."""

    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    HELD = "HELD"
    PREEMPTED = "PREEMPTED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def holds_slices(self) -> bool:
        return self in HOLDING_STATES


# Each set is defined here once; everything else imports it.
FINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT,
                          JobState.OUT_OF_MEMORY, JobState.NODE_FAIL})
HOLDING_STATES = frozenset({JobState.STARTING, JobState.RUNNING, JobState.STOPPING})  # with active allocations
QUEUED_STATES = frozenset({JobState.PENDING, JobState.HELD})
ACTIVE_STATES = HOLDING_STATES | QUEUED_STATES
FINAL_NAMES = frozenset(s.value for s in FINAL_STATES)
HOLDING_NAMES = tuple(sorted(s.value for s in HOLDING_STATES))
ACTIVE_NAMES = tuple(sorted(s.value for s in ACTIVE_STATES))


class Reason(str, enum.Enum):
    """Why a pending job is still pending (Slurm's words)."""

    PRIORITY = "Priority"
    RESOURCES = "Resources"
    USER_LIMIT = "UserLimit"
    GROUP_LIMIT = "GroupLimit"
    DEPENDENCY = "Dependency"
    HELD = "Held"
    DRAINING = "Draining"
    DEPENDENCY_NEVER_SATISFIED = "DependencyNeverSatisfied"
    NEVER_FITS = "NeverFits"
    EXECUTOR_DOWN = "ExecutorDown"  # the Docker engine (or the executor) cannot be reached
    ARRAY_TASK_LIMIT = "JobArrayTaskLimit"  # the array's %throttle tasks already run


class StopOutcome(str, enum.Enum):
    """Why a job that holds slices is being stopped; decides the state it ends in."""

    CANCELLED = "cancelled"  # ds01q cancel
    TIMEOUT = "timeout"  # its time limit
    IDLE = "idle"  # an interactive session idle for its group's idle_timeout
    PREEMPTED = "preempted"  # taken back for another job; requeued
    LAYOUT_CHANGE = "layout_change"  # its slice went or is going away: NODE_FAIL, requeued if allowed
    ADMIN_REQUEUE = "admin_requeue"  # ds01q admin requeue
    SHELL_EXIT = "shell_exit"  # the last shell of a session exited; its code is the job's
    NODE_DOWN = "node_down"  # its node missed its heartbeats: NODE_FAIL, batch jobs requeued

    @property
    def end_state(self) -> JobState:
        return _OUTCOME_STATE[self]

    @property
    def default_reason(self) -> str:
        return _OUTCOME_REASON[self]


_OUTCOME_STATE = {
    StopOutcome.CANCELLED: JobState.CANCELLED, StopOutcome.TIMEOUT: JobState.TIMEOUT,
    StopOutcome.IDLE: JobState.CANCELLED, StopOutcome.PREEMPTED: JobState.PREEMPTED,
    StopOutcome.LAYOUT_CHANGE: JobState.NODE_FAIL, StopOutcome.ADMIN_REQUEUE: JobState.PREEMPTED,
    StopOutcome.SHELL_EXIT: JobState.COMPLETED,  # FAILED when the shell's code is not 0
    StopOutcome.NODE_DOWN: JobState.NODE_FAIL,
}
_OUTCOME_REASON = {
    StopOutcome.CANCELLED: "cancelled", StopOutcome.TIMEOUT: "time limit reached",
    StopOutcome.IDLE: "idle timeout", StopOutcome.PREEMPTED: "preempted",
    StopOutcome.LAYOUT_CHANGE: "mig layout change", StopOutcome.ADMIN_REQUEUE: "requeued by admin",
    StopOutcome.SHELL_EXIT: "shell exited",
    StopOutcome.NODE_DOWN: "node down",
}


class RequestKind(str, enum.Enum):
    ANY = "any"  # one slice of any profile (best fit picks the smallest)
    MIG = "mig"  # one slice of a named profile
    GPUS = "gpus"  # N whole GPUs on one node
    NONE = "none"  # CPU only


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    """The GPU shape of a job. Hashable: pending jobs are grouped by it.

    kind ANY: one slice, any profile, with at least ``min_mem_mb`` GPU memory.
    kind MIG: one slice of ``profile``.
    kind GPUS: ``count`` whole GPUs (profile ``full``) on one node.
    kind NONE: no GPU.
    """

    kind: RequestKind = RequestKind.ANY
    profile: str | None = None
    count: int = 1
    min_mem_mb: int = 0
    gpu_model: str | None = None  # only GPUs whose name contains it (Slurm's --gres=gpu:a100:N)

    @property
    def wants_gpu(self) -> bool:
        return self.kind != RequestKind.NONE

    def describe(self) -> str:
        if self.kind == RequestKind.NONE:
            return "cpu-only"
        if self.kind == RequestKind.GPUS:
            return f"{self.count} whole {self.gpu_model + ' ' if self.gpu_model else ''}GPU(s)"
        if self.kind == RequestKind.MIG:
            return f"1 x {self.profile}"
        return "1 slice" + (f" with >= {self.min_mem_mb} MiB" if self.min_mem_mb else "")

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"kind": self.kind.value, "profile": self.profile, "count": self.count,
                                "min_mem_mb": self.min_mem_mb}
        if self.gpu_model:
            d["gpu_model"] = self.gpu_model
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ResourceRequest:
        return cls(
            kind=RequestKind(str(d.get("kind", "any"))),
            profile=d.get("profile") or None,  # type: ignore[arg-type]
            count=int(d.get("count", 1)),  # type: ignore[arg-type]
            min_mem_mb=int(d.get("min_mem_mb", 0)),  # type: ignore[arg-type]
            gpu_model=d.get("gpu_model") or None,  # type: ignore[arg-type]
        )


FULL_PROFILE = "full"


def gpu_model_key(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


@dataclass(frozen=True, slots=True)
class SliceInfo:
    """One schedulable unit: a MIG instance or a whole GPU (profile ``full``)."""

    uuid: str
    gpu_uuid: str
    profile: str
    compute_slices: int  # e.g. 2 for 2g.10gb; 7 for a whole A100
    gpu_compute_slices: int  # 7 on A100/H100/H200, 4 on A30
    memory_mb: int
    node: str = "local"
    gpu_name: str = ""
    drained: bool = False

    def is_model(self, model: str) -> bool:
        """Does this slice's GPU name contain ``model`` (case, spaces, - and _ ignored): a100, titanrtx…"""
        return gpu_model_key(model) in gpu_model_key(self.gpu_name)

    @property
    def is_full(self) -> bool:
        return self.profile == FULL_PROFILE

    @property
    def gpu_equiv(self) -> float:
        if self.is_full:
            return 1.0
        return self.compute_slices / self.gpu_compute_slices


@dataclass(frozen=True)
class Usage:
    """Resource use of a running job: CPU seconds so far, memory now (without
    reclaimable page cache) and the peak memory of its cgroup, if known."""

    cpu_s: float
    mem_bytes: int
    max_rss_bytes: int | None


_QUEUE_RANK = {"RUNNING": 0, "STARTING": 0, "STOPPING": 0, "PENDING": 1, "HELD": 2}


def queue_order(state: str, priority: float | None, job_id: int) -> tuple[int, float, int]:
    """How ``ds01q queue`` lists jobs: running first, then pending by priority, then held; ties by id."""
    return (_QUEUE_RANK.get(state, 3), -(priority or 0) if state == "PENDING" else 0, job_id)
