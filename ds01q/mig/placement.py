"""Where MIG instances sit on a GPU, and how to reach a target layout without touching busy ones.

An ``Instance`` is one GPU instance as NVML reports it (``nvmlGpuInstanceGetInfo``:
``placement.start``/``.size``, the GI id) plus whether a job holds it. ``plan_recut``
(pure) compares a GPU's instances with a target layout and says which instances stay,
which must go and which are created, one at a time, in an order that the driver
accepts: without an explicit placement the driver puts a new GPU instance at the
highest free valid start of its profile (``driver_start``; the MIG guide's example
``-cgi 19,14,5`` lands at 6:1, 4:2, 0:4), so the plan simulates that rule and checks
every step.

Rules:
  * a busy instance is never destroyed. If the target cannot keep every busy
    instance where it is, the plan is a whole-GPU drain (``full_drain``) and names
    the busy instances in the way (``blocking``);
  * among the plans that keep every busy instance, the one that keeps the most
    free instances (so destroys and creates the fewest) wins; ties go to the one
    that keeps larger instances;
  * MIG mode changes (to or from ``["full"]``) always take the whole GPU.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations, permutations

from ds01q.mig.profiles import GpuModel, Profile, is_full_layout
from ds01q.types import FULL_PROFILE

__all__ = ["Instance", "Step", "RecutPlan", "driver_start", "creation_order", "plan_recut", "legal_placements",
           "layout_fits_with"]


@dataclass(frozen=True, slots=True)
class Instance:
    """One GPU instance: profile, first memory slice, size in memory slices, GI id, slice uuid, busy."""

    profile: str
    start: int
    size: int
    gi_id: int | None = None
    uuid: str = ""
    busy: bool = False

    @property
    def span(self) -> range:
        return range(self.start, self.start + self.size)


@dataclass(frozen=True, slots=True)
class Step:
    """One change: destroy an instance (``gi_id``, ``uuid``) or create one of ``profile`` expected at ``start``."""

    action: str  # "destroy" | "create"
    profile: str
    start: int
    gi_id: int | None = None
    uuid: str = ""

    def commands(self, gpu_index: int, model: GpuModel) -> list[str]:
        i = int(gpu_index)
        if self.action == "destroy":
            return [f"nvidia-smi mig -i {i} -gi {int(self.gi_id or 0)} -dci",
                    f"nvidia-smi mig -i {i} -gi {int(self.gi_id or 0)} -dgi"]
        p = model.profile(self.profile)
        assert p is not None
        return [f"nvidia-smi mig -i {i} -cgi {p.profile_id} -C"]

    def describe(self) -> str:
        if self.action == "destroy":
            return f"destroy {self.profile} at {self.start} (GI {self.gi_id}, {self.uuid})"
        return f"create {self.profile} at {self.start}"


@dataclass(frozen=True, slots=True)
class RecutPlan:
    """How to turn a GPU's instances into ``target``.

    ``full_drain``: the change needs the whole GPU idle (a MIG mode change, or busy
    instances in the way: ``blocking``); ``steps`` are then empty and the caller uses
    the whole-GPU commands. Otherwise ``steps`` destroy only free instances.
    """

    model: str
    target: tuple[str, ...]
    keep: tuple[Instance, ...]
    steps: tuple[Step, ...]
    full_drain: bool = False
    blocking: tuple[str, ...] = field(default=())
    why: str = ""

    @property
    def changes(self) -> bool:
        return self.full_drain or bool(self.steps)

    @property
    def destroys(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.action == "destroy")

    @property
    def creates(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.action == "create")

    def to_json(self) -> dict[str, object]:
        return {"target": list(self.target), "full_drain": self.full_drain, "blocking": list(self.blocking),
                "why": self.why, "keep": [i.uuid or f"{i.profile}@{i.start}" for i in self.keep],
                "steps": [s.describe() for s in self.steps]}


def legal_placements(model: GpuModel, profile: str) -> tuple[tuple[int, int], ...]:
    """(start, size) of every place an instance of ``profile`` may sit on this model."""
    p = model.profile(profile)
    if p is None:
        return ()
    return tuple((s, p.memory_slices) for s in p.starts if s + p.memory_slices <= model.memory_slices)


def _room(model: GpuModel, existing: Sequence[Instance], p: Profile) -> bool:
    if sum(1 for m in existing if m.profile == p.name) >= p.max_count:
        return False
    if p.media_extensions and any(m.profile.endswith("+me") for m in existing):
        return False
    used = 0
    for m in existing:
        q = model.profile(m.profile)
        used += q.compute_slices if q is not None else m.size
    return used + p.compute_slices <= model.compute_slices


def driver_start(model: GpuModel, existing: Sequence[Instance], profile: str) -> int | None:
    """Where the driver puts a new ``profile`` instance next to ``existing``: the highest free valid start."""
    p = model.profile(profile)
    if p is None or not _room(model, existing, p):
        return None
    used = {k for m in existing for k in m.span}
    for start, size in sorted(legal_placements(model, profile), reverse=True):
        if not used.intersection(range(start, start + size)):
            return start
    return None


def creation_order(model: GpuModel, kept: Sequence[Instance], create: Sequence[str]) -> list[Instance] | None:
    """An order in which creating ``create`` next to ``kept`` succeeds, each with its expected start.

    Tries largest first, then every other order of the distinct profiles (a layout
    has at most 7 instances, so this stays small). None when no order works.
    """
    def size(name: str) -> tuple[int, int, str]:
        p = model.profile(name)
        return (-(p.memory_slices if p else 0), -(p.compute_slices if p else 0), name)

    first = tuple(sorted(create, key=size))
    seen: set[tuple[str, ...]] = set()
    for order in _orders(first):
        if order in seen:
            continue
        seen.add(order)
        state = list(kept)
        made: list[Instance] = []
        for name in order:
            start = driver_start(model, state, name)
            if start is None:
                break
            p = model.profile(name)
            assert p is not None
            inst = Instance(name, start, p.memory_slices)
            state.append(inst)
            made.append(inst)
        else:
            return made
        if len(seen) > 5040:
            break
    return None


def _orders(first: tuple[str, ...]) -> Iterable[tuple[str, ...]]:
    yield first
    yield from permutations(first)


def layout_fits_with(model: GpuModel, kept: Sequence[Instance], target: Sequence[str]) -> list[Instance] | None:
    """The instances to create so that ``kept`` plus them hold ``target`` (a multiset), or None."""
    rest = Counter(target)
    rest.subtract(Counter(i.profile for i in kept))
    if any(n < 0 for n in rest.values()):
        return None
    return creation_order(model, kept, sorted(rest.elements()))


def plan_recut(model: GpuModel, current: Sequence[Instance], target: Sequence[str], *,
               mig_enabled: bool = True) -> RecutPlan:
    """Which instances stay, go and are created to reach ``target``; pure. See the module docstring."""
    target_t = tuple(sorted(target))
    busy = [i for i in current if i.busy]
    if is_full_layout(target) or not mig_enabled or FULL_PROFILE in target:
        if not mig_enabled and is_full_layout(target):
            return RecutPlan(model.key, target_t, tuple(current), ())
        why = "a MIG mode change needs the whole GPU"
        return RecutPlan(model.key, target_t, (), (), True, tuple(i.uuid for i in busy), why)
    if Counter(i.profile for i in current) == Counter(target):
        return RecutPlan(model.key, target_t, tuple(current), ())
    free = [i for i in current if not i.busy]
    need = Counter(target)
    if any(n > need.get(p, 0) for p, n in Counter(i.profile for i in busy).items()):
        why = "busy instances of profiles the target does not have"
        return RecutPlan(model.key, target_t, (), (), True, tuple(i.uuid for i in busy), why)
    candidates = [i for i in free if i.profile in need]
    best: tuple[tuple[int, int], tuple[Instance, ...], list[Instance]] | None = None
    for n in range(len(candidates), -1, -1):
        if best is not None:
            break
        for keep_free in combinations(candidates, n):
            kept = [*busy, *keep_free]
            made = layout_fits_with(model, kept, target)
            if made is None:
                continue
            score = (len(keep_free), sum(i.size for i in keep_free))
            if best is None or score > best[0]:
                best = (score, tuple(kept), made)
    if best is None:
        why = "the busy instances leave no room for the target in any order the driver accepts"
        return RecutPlan(model.key, target_t, (), (), True, tuple(i.uuid for i in busy), why)
    _, kept, made = best
    kept_ids = {id(i) for i in kept}
    destroy = [Step("destroy", i.profile, i.start, i.gi_id, i.uuid) for i in current if id(i) not in kept_ids]
    create = [Step("create", i.profile, i.start) for i in made]
    return RecutPlan(model.key, target_t, tuple(sorted(kept, key=lambda i: i.start)), (*destroy, *create))


def apply_steps(model: GpuModel, current: Sequence[Instance], steps: Sequence[Step]) -> list[Instance]:
    """The instances after ``steps`` under the driver's rule; raises ValueError at an impossible step.

    Used by the tests and the simulator to check a plan without hardware.
    """
    state = list(current)
    for step in steps:
        if step.action == "destroy":
            match = [i for i in state if i.start == step.start and i.profile == step.profile]
            if not match:
                raise ValueError(f"no {step.profile} at {step.start} to destroy")
            if match[0].busy:
                raise ValueError(f"{step.profile} at {step.start} is busy")
            state.remove(match[0])
        else:
            start = driver_start(model, state, step.profile)
            if start is None:
                raise ValueError(f"cannot create {step.profile}")
            p = model.profile(step.profile)
            assert p is not None
            state.append(Instance(step.profile, start, p.memory_slices))
    return state
