"""Choose a MIG layout for a GPU from the queue's demand, and the nvidia-smi commands to reach it.

Layout convention (used throughout ds01q.mig):
  * ``["full"]`` means MIG mode off: the whole GPU is one slice.
  * ``[]`` means MIG mode on with no GPU instances (a state NVML can report).
  * otherwise a list of GPU instance profile names, e.g. ``["3g.20gb", "2g.10gb"]``;
    order does not matter, and ``plan_layout`` returns them largest first.

``plan_layout`` is a pure function. How it decides:
  1. Demand entries are profile names (pending and running requests), "full"
     (a whole GPU) or "any" (one slice of any profile). Profiles this GPU model
     cannot offer (another model's, or a compute-instance profile such as
     "1c.3g.20gb") are ignored.
  2. Whole-GPU demand wins when it is the larger share in GPU-equivalents:
     ``n_full * 7 > sum(compute slices of the satisfiable MIG demand)`` (an "any"
     counts as one slice). The result is then ``["full"]``.
  3. Otherwise every valid layout of the model, each filled up with the
     smallest profile that still fits, is scored on, in order: compute slices of
     demand served by exact profile matches ("any" requests take leftover
     instances, one slice each); distinct demanded profiles served; jobs served;
     number of instances; fewest memory slices used. The best one is returned.
     So a queue of 2g.10gb requests on an A100-40GB gets
     ``["2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"]``.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from ds01q.errors import RequestError
from ds01q.mig.profiles import (
    MODELS,
    GpuModel,
    Profile,
    is_full_layout,
    is_valid_layout,
    require_model,
    valid_layouts,
)
from ds01q.types import FULL_PROFILE

__all__ = ["ANY", "FULL_LAYOUT", "Plan", "plan_layout", "mig_commands", "make_plan", "fill_layout", "same_layout"]

ANY = "any"
FULL_LAYOUT: tuple[str, ...] = (FULL_PROFILE,)


@dataclass(frozen=True, slots=True)
class Plan:
    """A proposed layout for one GPU and the commands that make it.

    ``cost`` holds the ids of the jobs that must finish or be requeued before
    the commands can run (empty when the layout is already in place).
    """

    gpu_uuid: str
    name: str
    layout: tuple[str, ...]
    commands: tuple[str, ...]
    cost: tuple[int, ...] = field(default=())

    @property
    def gpu(self) -> str:
        return self.gpu_uuid

    @property
    def changes(self) -> bool:
        return bool(self.commands)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict: ``{"gpu", "name", "layout", "commands"}``."""
        return {"gpu": self.gpu_uuid, "name": self.name, "layout": list(self.layout), "commands": list(self.commands)}


def same_layout(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two layouts hold the same instances (order ignored)."""
    return Counter(a) == Counter(b)


def _profile(model: GpuModel, name: str) -> Profile:
    p = model.profile(name)
    if p is None:
        raise RequestError(f"{name!r} is not a profile of {model.key} (allowed: {', '.join(model.profile_names)})")
    return p


def _size_key(p: Profile) -> tuple[int, int, str]:
    return (-p.memory_slices, -p.compute_slices, p.name)


def _sorted_largest_first(model: GpuModel, layout: Iterable[str]) -> list[str]:
    return [p.name for p in sorted((_profile(model, n) for n in layout), key=_size_key)]


def fill_layout(model: GpuModel, layout: Sequence[str]) -> tuple[str, ...]:
    """Add the smallest profile (never a +me one) that still fits, until none does."""
    fillers = sorted((p for p in model.profiles if not p.media_extensions),
                     key=lambda p: (p.compute_slices, p.memory_slices, p.name))
    current = list(layout)
    while True:
        for p in fillers:
            if is_valid_layout(model, [*current, p.name]):
                current.append(p.name)
                break
        else:
            return tuple(sorted(current))


@lru_cache(maxsize=None)
def _candidates(model_key: str) -> tuple[tuple[tuple[str, ...], Counter[str]], ...]:
    model = MODELS[model_key]
    filled = {fill_layout(model, list(layout)) for layout in valid_layouts(model_key)}
    filled.add(fill_layout(model, []))
    return tuple((layout, Counter(layout)) for layout in sorted(filled))


def _score(model: GpuModel, have: Counter[str], want: Counter[str], n_any: int) -> tuple[int, int, int, int, int]:
    served_slices = served_jobs = shapes = 0
    used = 0
    for name, n in want.items():
        got = min(have.get(name, 0), n)
        if got:
            served_slices += got * _profile(model, name).compute_slices
            served_jobs += got
            shapes += 1
            used += got
    leftover = sum(have.values()) - used
    any_served = min(n_any, leftover)
    served_slices += any_served
    served_jobs += any_served
    memory_used = sum(n * _profile(model, name).memory_slices for name, n in have.items())
    return (served_slices, shapes, served_jobs, sum(have.values()), -memory_used)


def plan_layout(gpu_name: str, demand: Sequence[str]) -> list[str]:
    """A valid layout for ``gpu_name`` that serves as much of ``demand`` as possible.

    Returns ``["full"]`` (MIG off) when whole-GPU requests dominate; see the
    module docstring for the rules. Raises RequestError for a GPU without a MIG table.
    """
    model = require_model(gpu_name)
    counts = Counter(demand)
    n_full = counts.pop(FULL_PROFILE, 0)
    n_any = counts.pop(ANY, 0)
    want: Counter[str] = Counter({name: n for name, n in counts.items() if model.profile(name) is not None})
    mig_weight = n_any + sum(n * _profile(model, name).compute_slices for name, n in want.items())
    if n_full and n_full * model.compute_slices > mig_weight:
        return [FULL_PROFILE]
    best_layout: tuple[str, ...] = ()
    best_score: tuple[int, ...] | None = None
    for layout, have in _candidates(model.key):
        score = _score(model, have, want, n_any)
        if best_score is None or score > best_score:
            best_layout, best_score = layout, score
    return _sorted_largest_first(model, best_layout)


_GB_RE = re.compile(r"^(\d+)g\.(\d+)gb")


def _command_model(layout: Sequence[str], gpu_name: str | None) -> GpuModel | None:
    """The table that gives profile IDs for ``layout``; None when only names can be used."""
    if gpu_name is not None:
        model = require_model(gpu_name)
        if not is_valid_layout(model, layout):
            raise RequestError(
                f"layout {', '.join(layout)} does not fit on {gpu_name} (profiles: {', '.join(model.profile_names)})"
            )
        return model
    fits = [m for m in MODELS.values() if is_valid_layout(m, layout)]
    if not fits:
        raise RequestError(f"layout {', '.join(layout) or '(empty)'} does not fit on any known MIG GPU")
    shapes = {tuple((p.profile_id, p.memory_slices, p.compute_slices)
                    for p in (_profile(m, n) for n in sorted(set(layout)))) for m in fits}
    return fits[0] if len(shapes) == 1 else None


def _create_args(layout: Sequence[str], model: GpuModel | None) -> str:
    if model is not None:
        profiles = sorted((_profile(model, n) for n in layout), key=_size_key)
        return ",".join(str(p.profile_id) for p in profiles)

    def by_name(name: str) -> tuple[int, int, str]:
        m = _GB_RE.match(name)
        return (-int(m.group(1)), -int(m.group(2)), name) if m else (0, 0, name)

    return ",".join(sorted(layout, key=by_name))


def mig_commands(gpu_index: int, current: Sequence[str], layout: Sequence[str],
                 gpu_name: str | None = None) -> list[str]:
    """The nvidia-smi commands that turn GPU ``gpu_index`` from ``current`` into ``layout``.

    Order: destroy compute instances, destroy GPU instances, switch MIG mode if
    needed, create the new GPU instances largest first with their default
    compute instance. With ``gpu_name`` the layout is checked and profile IDs
    are used; without it IDs are used when every GPU model that fits the layout
    agrees on them, and profile names otherwise (nvidia-smi accepts both).
    Returns [] when the layout is already in place.
    """
    if same_layout(current, layout):
        return []
    target_full = is_full_layout(layout)
    if not target_full and FULL_PROFILE in layout:
        raise RequestError(f"layout {', '.join(layout)}: 'full' (MIG off) cannot be combined with MIG profiles")
    model = None if target_full or not layout else _command_model(layout, gpu_name)
    current_full = is_full_layout(current)
    i = int(gpu_index)
    commands: list[str] = []
    if not current_full and current:
        commands += [f"nvidia-smi mig -i {i} -dci", f"nvidia-smi mig -i {i} -dgi"]
    if target_full:
        if not current_full:
            commands.append(f"nvidia-smi -i {i} -mig 0")
        return commands
    if current_full:
        commands.append(f"nvidia-smi -i {i} -mig 1")
    if layout:
        commands.append(f"nvidia-smi mig -i {i} -cgi {_create_args(layout, model)} -C")
    return commands


def make_plan(gpu_index: int, gpu_uuid: str, gpu_name: str, current: Sequence[str], demand: Sequence[str],
              cost: Iterable[int] = ()) -> Plan:
    """plan_layout + mig_commands for one GPU. ``cost`` is kept only if something changes."""
    layout = plan_layout(gpu_name, demand)
    commands = mig_commands(gpu_index, current, layout, gpu_name=gpu_name)
    return Plan(gpu_uuid, gpu_name, tuple(layout), tuple(commands), tuple(cost) if commands else ())
