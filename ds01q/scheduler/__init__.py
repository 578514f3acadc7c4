"""The pure scheduler: ``schedule(snapshot) -> CycleResult`` and ``check_request``.

Imports only ``ds01q.types``, ``ds01q.errors`` and the standard library.
"""
from ds01q.scheduler.cycle import schedule
from ds01q.scheduler.limits import check_request, limits_for
from ds01q.scheduler.priority import POLICIES, fairshare_factor
from ds01q.scheduler.snapshot import (
    CycleResult,
    GroupPolicy,
    Limits,
    PendingInfo,
    PendingJob,
    Placement,
    RunningJob,
    Snapshot,
    Victim,
    Weights,
)

__all__ = [
    "POLICIES",
    "CycleResult",
    "GroupPolicy",
    "Limits",
    "PendingInfo",
    "PendingJob",
    "Placement",
    "RunningJob",
    "Snapshot",
    "Victim",
    "Weights",
    "check_request",
    "fairshare_factor",
    "limits_for",
    "schedule",
]
