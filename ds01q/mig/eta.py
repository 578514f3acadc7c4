"""When a re-cut can happen: pure.

``recut_eta`` answers "how long until this GPU can be re-cut to ``target`` without stopping
a running job": the busy instances are freed in the order their jobs are expected to end
(``free_at``: a job's start plus its time limit, the only bound the queue has), and the first
moment at which ``plan_recut`` no longer needs a whole-GPU drain is when the re-cut can start;
it then takes ``step_s`` per destroy or create. ``show`` and ``shell`` use it for the waiting
line of a MIG job that a proposed or running re-cut would serve.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ds01q.mig.placement import Instance, RecutPlan, plan_recut
from ds01q.mig.profiles import GpuModel

__all__ = ["RECUT_STEP_S", "Eta", "recut_eta"]

RECUT_STEP_S = 5.0  # one nvidia-smi destroy or create, with the inventory re-read after it


@dataclass(frozen=True, slots=True)
class Eta:
    """``wait_s`` until the busy instances in the way are free, then ``recut_s`` of steps."""

    wait_s: float
    recut_s: float
    plan: RecutPlan
    waits_for: tuple[str, ...]  # the busy instances (slice uuids) whose jobs must end first

    @property
    def total_s(self) -> float:
        return self.wait_s + self.recut_s


def recut_eta(model: GpuModel, instances: Sequence[Instance], target: Sequence[str], free_at: Mapping[str, float],
              now: float, step_s: float = RECUT_STEP_S) -> Eta | None:
    """The earliest re-cut of these instances to ``target`` that stops no job, or None when it
    needs a busy instance whose end is unknown (no entry in ``free_at``) or cannot be reached."""
    busy = sorted((i for i in instances if i.busy), key=lambda i: (free_at.get(i.uuid, math.inf), i.start))
    for k in range(len(busy) + 1):
        freed = busy[:k]
        if freed and math.isinf(free_at.get(freed[-1].uuid, math.inf)):
            return None
        gone = {i.uuid for i in freed}
        current = [replace(i, busy=False) if i.uuid in gone else i for i in instances]
        plan = plan_recut(model, current, list(target))
        if not plan.full_drain:  # wait only for the freed instances the plan destroys
            destroyed = {s.uuid for s in plan.destroys}
            waits = tuple(i.uuid for i in freed if i.uuid in destroyed)
            start = max([now, *(free_at[u] for u in waits)])
            return Eta(start - now, step_s * len(plan.steps), plan, waits)
    return None
