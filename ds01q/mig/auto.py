"""Automatic MIG layouts: propose the one re-cut that starts the most waiting jobs now. Pure.

``propose(gpus, demand, history, now, params)`` is what both the daemon
(``controller/autolayout.py``) and the simulator (``tools/simulate_mig.py``) run:

  * ``demand``: the requests of jobs waiting for slices (a profile, ``"any"`` or
    ``"full"``), as a Counter;
  * ``served(free, demand)`` weighs the waiting requests that the free instances
    of the cluster could start now by their compute slices (exact profiles first,
    then ``any`` on the smallest leftover instance, then whole GPUs at 7), so a
    whole-GPU job counts as much as seven 1g ones;
  * for every GPU not re-cut within ``min_interval_s`` and under ``max_per_day``
    re-cuts in the last 24 h, every candidate target (the model's filled layouts
    that contain the GPU's busy instances; a MIG mode change only on an idle GPU)
    is scored by how many more waiting jobs would start; ``plan_recut`` must reach
    it without touching a busy instance (it never stops a running job);
  * the best target wins when its gain is at least ``min_gain`` slices; ties go to
    the fewest steps, then the GPU with the lowest index.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from ds01q.mig.placement import Instance, RecutPlan, plan_recut
from ds01q.mig.planner import ANY, _candidates
from ds01q.mig.profiles import MODELS
from ds01q.types import FULL_PROFILE

__all__ = ["AutoParams", "GpuView", "Proposal", "propose", "served", "target_of", "DAY_S"]

DAY_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class AutoParams:
    min_interval_s: float = 600.0  # per GPU
    min_gain: int = 1  # compute slices of waiting jobs that would start (1 = one 1g job)
    max_per_day: int = 24  # re-cuts per GPU in any 24 h


@dataclass(frozen=True, slots=True)
class GpuView:
    """One GPU as the proposer sees it: MIG mode and its instances, busy ones flagged."""

    uuid: str
    model: str  # a key of ds01q.mig.profiles.MODELS
    mig_enabled: bool
    instances: tuple[Instance, ...] = ()
    busy_full: bool = False  # MIG off and a job holds the whole GPU
    index: int = 0

    @property
    def idle(self) -> bool:
        return not self.busy_full and not any(i.busy for i in self.instances)

    def free(self) -> Counter[str]:
        if not self.mig_enabled:
            return Counter() if self.busy_full else Counter({FULL_PROFILE: 1})
        return Counter(i.profile for i in self.instances if not i.busy)


@dataclass(frozen=True, slots=True)
class Proposal:
    gpu: str
    target: tuple[str, ...]
    gain: int  # compute slices of waiting jobs that would start
    served_before: int
    served_after: int
    plan: RecutPlan | None  # None for a MIG mode change of an idle GPU

    def describe(self) -> str:
        return (f"re-cut {self.gpu} to {' + '.join(self.target)}: starts waiting jobs worth {self.gain} more "
                f"compute slice(s) ({self.served_before} -> {self.served_after})")


def target_of(detail: str) -> tuple[str, ...] | None:
    """The target layout in a ``Proposal.describe()`` text (an inventory event's detail), or None."""
    m = re.match(r"re-cut \S+ to ([^:]+):", detail or "")
    return tuple(p.strip() for p in m.group(1).split("+")) if m else None


def _compute(model: str, name: str) -> tuple[int, int]:
    p = MODELS[model].profile(name)
    return (p.compute_slices, p.memory_mb) if p is not None else (99, 0)


def served(free: Mapping[str, int], demand: Mapping[str, int], model: str = "A100-40GB") -> int:
    """Compute slices of the waiting requests the free instances could start now: exact profiles,
    then "any" on the smallest leftover instance (one slice each), then whole GPUs (all slices)."""
    left = Counter({k: v for k, v in free.items() if v > 0})
    n = 0
    for name, want in demand.items():
        if name in (ANY, FULL_PROFILE):
            continue
        got = min(want, left.get(name, 0))
        n += got * _compute(model, name)[0]
        left[name] -= got
    want_any = demand.get(ANY, 0)
    if want_any:
        for name in sorted((k for k in left if k != FULL_PROFILE and left[k] > 0), key=lambda k: _compute(model, k)):
            got = min(want_any, left[name])
            n += got
            want_any -= got
            left[name] -= got
        got = min(want_any, left.get(FULL_PROFILE, 0))
        n += got
        left[FULL_PROFILE] = left.get(FULL_PROFILE, 0) - got
    n += min(demand.get(FULL_PROFILE, 0), left.get(FULL_PROFILE, 0)) * MODELS[model].compute_slices
    return n


def _allowed(times: Sequence[float], now: float, p: AutoParams) -> bool:
    if times and now - max(times) < p.min_interval_s:
        return False
    return sum(1 for t in times if now - t < DAY_S) < p.max_per_day


@lru_cache(maxsize=4096)
def _plan(model: str, instances: tuple[Instance, ...], target: tuple[str, ...]) -> RecutPlan:
    return plan_recut(MODELS[model], instances, target)


def _targets(model: str) -> tuple[tuple[str, ...], ...]:
    return tuple(layout for layout, _ in _candidates(model))


def propose(gpus: Sequence[GpuView], demand: Mapping[str, int], history: Mapping[str, Sequence[float]],
            now: float, params: AutoParams = AutoParams()) -> Proposal | None:
    """The best single re-cut for ``demand``, or None (see the module docstring)."""
    if not demand or not any(demand.values()):
        return None
    free_all: Counter[str] = Counter()
    for g in gpus:
        free_all.update(g.free())
    model0 = gpus[0].model if gpus else "A100-40GB"
    base = served(free_all, demand, model0)
    best: tuple[tuple[int, int, int], Proposal] | None = None
    for g in gpus:
        if not _allowed(history.get(g.uuid, ()), now, params):
            continue
        others = free_all.copy()
        others.subtract(g.free())
        busy = Counter(i.profile for i in g.instances if i.busy)
        options: list[tuple[int, tuple[str, ...]]] = []
        targets = list(_targets(g.model))
        if g.idle:
            targets.append((FULL_PROFILE,))
        elif not g.mig_enabled:
            continue  # a whole GPU in use: nothing can change
        for target in targets:
            tc = Counter(target)
            if any(tc[k] < v for k, v in busy.items()):
                continue
            after = others.copy()
            after.update(tc)
            after.subtract(busy)
            gain = served(after, demand, g.model) - base
            if gain >= params.min_gain:
                options.append((gain, target))
        for gain, target in sorted(options, key=lambda o: (-o[0], o[1])):
            if best is not None and gain < best[0][0]:
                break
            if target == (FULL_PROFILE,) or not g.mig_enabled:
                if not g.idle:
                    continue
                plan, steps = None, 1 + len(target)
            else:
                plan = _plan(g.model, g.instances, target)
                if plan.full_drain:
                    continue
                steps = len(plan.steps)
            key = (gain, -steps, -g.index)
            if best is None or key > best[0]:
                best = (key, Proposal(g.uuid, target, gain, base, base + gain, plan))
            break
    return None if best is None else best[1]
