"""The frozen input and output of one scheduling pass.

The controller builds a ``Snapshot`` from the database and the inventory;
``ds01q.scheduler.cycle.schedule(snapshot)`` turns it into a ``CycleResult``.
Nothing here touches a database, Docker or the wall clock: ``now`` is a field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ds01q.types import Reason, ResourceRequest, SliceInfo


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-group limits, or a user's merged limits. ``None`` means unlimited."""

    max_gpus: float | None = None  # GPU-equivalents held at once
    max_slices: int | None = None  # slices held at once
    max_running_jobs: int | None = None
    max_queued_jobs: int | None = None  # pending jobs (checked at submit)
    max_interactive: int | None = None  # interactive sessions running at once
    max_runtime_s: float | None = None  # also the default time limit
    max_slices_per_job: int | None = None  # ds01-infra max_gpu_slots_per_container
    allowed_profiles: frozenset[str] | None = None  # None: any profile
    allow_full_gpu: bool = True


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    name: str
    priority: int = 0
    limits: Limits = field(default_factory=Limits)
    share: float = 1.0  # fair-share weight of each member
    group_max_gpus: float | None = None  # GPU-equivalents held by all members at once (GroupLimit)
    borrowing: bool = False  # members may go beyond max_gpus on slices nobody within quota waits for
    borrow_interactive: bool = False  # interactive sessions may borrow too


@dataclass(frozen=True, slots=True)
class Weights:
    """Priority = sum of weighted factors, each factor normalised to [0, 1]
    (except boost and nice, which are added as they are)."""

    group: float = 1000.0  # x group priority / max group priority
    age: float = 100.0  # x min(age / age_cap_s, 1)
    age_cap_s: float = 7 * 24 * 3600.0
    fairshare: float = 500.0  # x 2 ** (-usage / share_target)
    halflife_s: float = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class PendingJob:
    id: int
    user: str
    group: str
    request: ResourceRequest
    submitted_at: float
    time_limit_s: float
    interactive: bool = False
    nice: int = 0  # >= 0; subtracted from priority
    boost: int = 0  # admin boost, added to priority
    held: bool = False
    # Fields for holds, dependencies, arrays and requeue (UX issue):
    dependency: str = "none"  # none | waiting | never  (computed by the controller)
    array_id: int | None = None
    requeue_count: int = 0
    eligible_at: float = 0.0  # not before (requeue backoff, --begin)


@dataclass(frozen=True, slots=True)
class RunningJob:
    id: int
    user: str
    group: str
    slices: tuple[str, ...]
    started_at: float
    time_limit_s: float
    interactive: bool = False
    gpu_equiv: float = 0.0
    stopping: bool = False  # a stop was requested: its slices are free soon
    array_id: int | None = None
    node: str | None = None

    @property
    def expected_end(self) -> float:
        return self.started_at + self.time_limit_s


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: float
    slices: tuple[SliceInfo, ...]
    pending: tuple[PendingJob, ...]
    running: tuple[RunningJob, ...]
    groups: Mapping[str, GroupPolicy]
    user_limits: Mapping[str, Limits] = field(default_factory=dict)  # merged: group limits + user override
    usage: Mapping[str, float] = field(default_factory=dict)  # user -> decayed GPU-equivalent seconds
    weights: Weights = field(default_factory=Weights)
    policy: str = "backfill"  # fifo | priority | backfill
    # Profiles that some valid layout of some GPU in the inventory could offer
    # (used for NeverFits when the current layout cannot satisfy a request).
    possible_profiles: frozenset[str] = frozenset()
    # Nodes that take no new job (DOWN: missed heartbeats; DRAINED by an admin). Their slices
    # count as drained in this pass.
    unavailable_nodes: frozenset[str] = frozenset()
    # Several nodes (dispatch.kind rq): the nodes that take new jobs (UP, not drained); a CPU-only
    # job goes to the least loaded. None: one server, whose jobs all run here.
    nodes: tuple[str, ...] | None = None
    # Arrays with a %throttle: array id -> how many of its tasks may run at once.
    array_throttle: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Placement:
    job_id: int
    slices: tuple[str, ...]
    node: str | None = None  # a CPU-only job's node on several nodes (else the slices' node)


@dataclass(frozen=True, slots=True)
class PendingInfo:
    reason: Reason
    priority: float
    estimated_start: float | None = None  # None: unknown
    detail: str = ""  # e.g. "GPU Limit Reached (1.14/1.0)" or "3g.20gb would start sooner"


@dataclass(frozen=True, slots=True)
class Victim:
    """A borrowing job to preempt so that ``for_job`` (within its quota) can start."""

    job_id: int
    for_job: int
    slices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CycleResult:
    placements: tuple[Placement, ...]
    pending: Mapping[int, PendingInfo]
    priorities: Mapping[int, float] = field(default_factory=dict)
    factors: Mapping[int, Mapping[str, float]] = field(default_factory=dict)  # for `queue --long`
    victims: tuple[Victim, ...] = ()  # borrowers to preempt (fewest, youngest)
    borrowing: frozenset[int] = frozenset()  # running jobs and this pass's placements beyond their quota
