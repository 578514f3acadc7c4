"""EASY backfill: one reservation for the first job blocked on Resources.

Every usable (not drained) slice has a time at which it becomes free:
now when free, a running job's ``started_at + time_limit_s`` when held (at
least now), ``now + time_limit_s`` when placed in this pass. The earliest
start of a shape is the first time enough of its candidate slices are free
(``placement.earliest_fit``); that is the reservation's ``start`` and the
slices it would use are its ``slices``.

A lower-priority job may start now only if it cannot delay the reservation:
it ends by ``start`` (``now + time_limit_s <= start``), or it uses none of the
reserved slices. Reserved slices that are busy now stay busy until their
running job ends, so only reserved slices that are free now (whole GPUs of a
``--gpus N`` request on one node) are ever withheld.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ds01q.scheduler.snapshot import RunningJob
from ds01q.types import SliceInfo

NO_SLICES: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Reservation:
    job_id: int
    start: float
    end: float  # start + the reserved job's time limit
    slices: frozenset[str]

    def exclude_for(self, now: float, time_limit_s: float) -> frozenset[str]:
        """Slices a job with this time limit must leave alone to keep the reservation."""
        return NO_SLICES if now + time_limit_s <= self.start else self.slices


def availability(now: float, slices: Iterable[SliceInfo], running: Iterable[RunningJob]) -> dict[str, float]:
    """uuid -> when the slice is free, for every slice that is not drained."""
    avail = {s.uuid: now for s in slices if not s.drained}
    for job in running:
        end = job.expected_end if job.expected_end > now else now
        for uuid in job.slices:
            if uuid in avail:
                avail[uuid] = end
    return avail


def hold_reserved(avail: dict[str, float], reservation: Reservation) -> None:
    """Mark the reserved slices busy until the reserved job would end (for later estimates)."""
    for uuid in reservation.slices:
        if uuid in avail and avail[uuid] < reservation.end:
            avail[uuid] = reservation.end
