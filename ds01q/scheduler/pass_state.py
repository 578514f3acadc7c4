"""The state one scheduling pass keeps per shape (a request under one set of limits) and per user
(``cycle._Pass``), and why a shape can never be placed whatever is free (``static_reason``)."""
from __future__ import annotations

import math
from typing import NamedTuple

from ds01q.scheduler.limits import Account, hard_limit_refusal
from ds01q.scheduler.placement import Shape
from ds01q.scheduler.snapshot import Limits
from ds01q.types import Reason, RequestKind, SliceInfo

__all__ = ["Matching", "ShapeState", "UserState", "Wait", "static_reason"]


class Matching(NamedTuple):
    """What a shape's slice filter gives, shared by users whose limits filter alike."""

    everywhere: tuple[SliceInfo, ...]  # the slices the shape accepts
    usable: tuple[SliceInfo, ...]  # those not drained
    equiv: float  # the fewest GPU-equivalents the shape can take (from usable, else everywhere)
    fits_everywhere: bool
    fits_usable: bool


class ShapeState:
    """One shape (a request under one set of limits) during a pass."""

    __slots__ = ("shape", "candidates", "equiv", "nslices", "static", "no_gpus", "exhausted", "blocked_from",
                 "estimate", "resources_wait", "behind_wait")

    def __init__(self, shape: Shape, matching: Matching, limits: Limits, owner: str) -> None:
        self.shape = shape
        self.candidates = matching.usable
        self.equiv = matching.equiv
        request = shape.request
        self.nslices = 0 if request.kind == RequestKind.NONE else (
            request.count if request.kind == RequestKind.GPUS else 1)
        static = static_reason(shape, limits, matching, owner)
        self.static: Wait | None = None if static is None else (static[0], static[1], None, None)
        self.no_gpus = f"No GPUs available for {request.describe()}"
        self.exhausted = False  # no free slice fits any more in this pass
        self.blocked_from = math.inf  # the reservation withholds the fit from jobs with time limits >= this
        self.estimate: tuple[float | None, str] | None = None
        # Waits shared by every job of the shape (fewer tuples for big queues).
        self.resources_wait: Wait = (Reason.RESOURCES, self.no_gpus, self, None)
        self.behind_wait: Wait | None = None  # Priority: behind the fifo head or the reservation


def static_reason(shape: Shape, limits: Limits, matching: Matching, owner: str) -> tuple[Reason, str] | None:
    refusal = hard_limit_refusal(shape.request, limits, matching.equiv, None, owner)
    if refusal is not None:
        return Reason.USER_LIMIT, refusal
    if not matching.fits_everywhere:
        return Reason.NEVER_FITS, f"no {shape.request.describe()} in the current layout"
    if not matching.fits_usable:
        return Reason.DRAINING, f"only drained slices fit {shape.request.describe()}"
    return None


# A waiting job: reason, detail, its shape (for the estimate and hints) or None, its
# estimated start when known without the shape (BeginTime, the reservation).
Wait = tuple[Reason, str, ShapeState | None, float | None]


class UserState:
    __slots__ = ("group", "account", "index", "owner", "max_runtime_s", "shapes", "refused", "refused_interactive")

    def __init__(self, group: str, account: Account, index: int, owner: str, shapes: dict[int, ShapeState]) -> None:
        self.group = group
        self.account = account
        self.index = index  # shared by users with equal limits, so they share shapes
        self.owner = owner  # " of group student" / " of user alice", for messages
        runtime = account.limits.max_runtime_s
        self.max_runtime_s = math.inf if runtime is None else runtime + 1e-9
        self.shapes = shapes  # id(job.request) -> shape; one dict per limits index, shared
        # Limit refusals per shape. Holdings only grow during a pass, so a job refused
        # now stays refused: later jobs of the same user and shape reuse the answer.
        self.refused: dict[ShapeState, Wait] = {}
        self.refused_interactive: dict[ShapeState, Wait] = {}
