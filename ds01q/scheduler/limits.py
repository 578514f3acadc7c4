"""Per-user and per-group limits.

A user's limits are ``snapshot.user_limits[user]`` when present (already merged
by the config layer), else their group's ``limits``. ``None`` means unlimited.

Two kinds of check:

- hard limits (``hard_limit_refusal``): the request itself can never pass
  (profile not allowed, whole GPU not allowed, too many slices or
  GPU-equivalents for one job, time over ``max_runtime``). ``check_request``
  refuses such a request at submit; a pass leaves such a job at UserLimit.
- held limits (``LimitTracker``): what a user (or a group) holds now, running
  jobs plus the placements of this pass, and what one more job would add.
  Words follow ds01-infra: ``GPU Limit Reached (0.86/1.0)`` shows what the
  user holds now and the limit.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ds01q.scheduler.placement import Shape
from ds01q.scheduler.snapshot import Limits, RunningJob, Snapshot
from ds01q.types import FULL_PROFILE, Reason, RequestKind, ResourceRequest, SliceInfo

GPU_EPS = 1e-6  # float slack when comparing GPU-equivalents with a limit
NO_LIMITS = Limits()


def fmt_num(x: float) -> str:
    """0.857 -> '0.86', 1 -> '1.0', 0.5 -> '0.5'."""
    text = f"{x:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def fmt_duration(seconds: float) -> str:
    """Seconds in the config's words: 48h, 30m, 90s."""
    s = int(round(seconds))
    if s and s % 3600 == 0:
        return f"{s // 3600}h"
    if s and s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


def limits_for(snapshot: Snapshot, user: str, group: str) -> Limits:
    override = snapshot.user_limits.get(user)
    if override is not None:
        return override
    policy = snapshot.groups.get(group)
    return policy.limits if policy is not None else NO_LIMITS


def shape_for(request: ResourceRequest, limits: Limits) -> Shape:
    return Shape(request, limits.allowed_profiles, limits.allow_full_gpu)


def _request_slices(request: ResourceRequest) -> int:
    if request.kind == RequestKind.NONE:
        return 0
    return request.count if request.kind == RequestKind.GPUS else 1


def request_words(request: ResourceRequest) -> str:
    """The request as the user typed it: --gpus 2, --mig 3g.20gb, --gpu-mem 20480m, one slice."""
    if request.kind == RequestKind.GPUS:
        return f"--gpus {request.count}"
    if request.kind == RequestKind.MIG:
        return f"--mig {request.profile}"
    if request.kind == RequestKind.NONE:
        return "--gpus 0"
    return f"--gpu-mem {request.min_mem_mb}m" if request.min_mem_mb else "one slice"


def _profiles(profiles: frozenset[str]) -> str:
    return "[" + ", ".join(sorted(profiles)) + "]"


def hard_limit_refusal(
    request: ResourceRequest, limits: Limits, request_equiv: float, time_limit_s: float | None, where: str = ""
) -> str | None:
    """Why this request can never pass these limits, or None. ``where`` e.g. ' of group student'."""
    kind = request.kind
    if kind == RequestKind.GPUS or (kind == RequestKind.MIG and request.profile == FULL_PROFILE):
        if not limits.allow_full_gpu:
            return f"{request_words(request)}: whole GPUs are refused by allow_full_gpu false{where}"
    elif kind == RequestKind.MIG and limits.allowed_profiles is not None:
        if request.profile not in limits.allowed_profiles:
            return f"--mig {request.profile} is not in allowed_profiles {_profiles(limits.allowed_profiles)}{where}"
    count = _request_slices(request)
    words = request_words(request)
    if limits.max_slices_per_job is not None and count > limits.max_slices_per_job:
        return f"{words} exceeds max_slices_per_job {limits.max_slices_per_job}{where}"
    if limits.max_slices is not None and count > limits.max_slices:
        return f"{words} exceeds max_slices {limits.max_slices}{where}"
    if limits.max_gpus is not None and request_equiv > limits.max_gpus + GPU_EPS:
        return f"{words} ({fmt_num(request_equiv)} GPU-equivalents) exceeds max_gpus {fmt_num(limits.max_gpus)}{where}"
    return runtime_refusal(time_limit_s, limits, where)


def runtime_refusal(time_limit_s: float | None, limits: Limits, where: str = "") -> str | None:
    if time_limit_s is None or limits.max_runtime_s is None or time_limit_s <= limits.max_runtime_s + 1e-9:
        return None
    return f"--time {fmt_duration(time_limit_s)} exceeds max_runtime {fmt_duration(limits.max_runtime_s)}{where}"


_PROFILE_MEM = re.compile(r"(\d+)gb$")


def _profile_mem_mb(profile: str) -> int:
    m = _PROFILE_MEM.search(profile)
    return int(m.group(1)) * 1024 if m else 0


def _never_offered(request: ResourceRequest, limits: Limits, slices: tuple[SliceInfo, ...],
                   possible_profiles: frozenset[str]) -> str | None:
    """Why no layout of this inventory can ever serve the request, or None."""
    shape = shape_for(request, limits)
    if request.kind == RequestKind.MIG:
        if request.profile in possible_profiles or any(s.profile == request.profile for s in slices):
            return None
        offered = ", ".join(sorted(possible_profiles | {s.profile for s in slices})) or "none"
        return f"MIG profile {request.profile} is not offered by any GPU here (profiles: {offered})"
    if request.kind == RequestKind.GPUS:
        gpus_per_node: dict[str, set[str]] = {}
        for s in slices:
            gpus_per_node.setdefault(s.node, set()).add(s.gpu_uuid)
        most = max((len(g) for g in gpus_per_node.values()), default=0)
        if request.count > most:
            return f"--gpus {request.count}: no node has that many GPUs (largest: {most})"
        return None
    if request.kind == RequestKind.ANY:
        if any(shape.accepts(s) for s in slices):
            return None
        possible = [p for p in possible_profiles if p != FULL_PROFILE and shape.accepts(_probe(p))]
        if possible:
            return None
        if request.min_mem_mb:
            return f"{request_words(request)}: no slice here{_allowed_note(limits)} has that much memory"
        return f"no slice here is allowed{_allowed_note(limits)}"
    return None


def _probe(profile: str) -> SliceInfo:
    return SliceInfo(uuid="", gpu_uuid="", profile=profile, compute_slices=0, gpu_compute_slices=7,
                     memory_mb=_profile_mem_mb(profile))


def _allowed_note(limits: Limits) -> str:
    note = "" if limits.allowed_profiles is None else f" in allowed_profiles {_profiles(limits.allowed_profiles)}"
    return note if limits.allow_full_gpu else note + " without whole GPUs (allow_full_gpu false)"


def _request_equiv(request: ResourceRequest, limits: Limits, slices: tuple[SliceInfo, ...]) -> float:
    if request.kind == RequestKind.GPUS:
        return float(request.count)
    if request.kind == RequestKind.NONE:
        return 0.0
    shape = shape_for(request, limits)
    return min((s.gpu_equiv for s in slices if shape.accepts(s)), default=0.0)


def check_request(
    request: ResourceRequest,
    limits: Limits,
    slices: tuple[SliceInfo, ...],
    possible_profiles: frozenset[str],
    time_limit_s: float | None,
    group: str | None = None,
) -> str | None:
    """A one-line refusal when the request can never run, else None.

    Checks the hard limits (see ``hard_limit_refusal``) and that some layout of
    the inventory offers the shape: a MIG profile must be in
    ``possible_profiles`` or in the current ``slices``; ``--gpus N`` needs a
    node with N GPUs; ``--gpu-mem`` needs an allowed slice (or possible
    profile) with that much memory. ``group`` names the limits' owner in the
    message, e.g. ``--time 48h exceeds max_runtime 24h of group student``.
    """
    where = f" of group {group}" if group else ""
    refusal = hard_limit_refusal(request, limits, _request_equiv(request, limits, slices), time_limit_s, where)
    return refusal or _never_offered(request, limits, slices, possible_profiles)


@dataclass(slots=True)
class Held:
    """What one user (or group) holds now."""

    gpus: float = 0.0
    slices: int = 0
    jobs: int = 0
    interactive: int = 0

    def add(self, equiv: float, nslices: int, interactive: bool) -> None:
        self.gpus += equiv
        self.slices += nslices
        self.jobs += 1
        if interactive:
            self.interactive += 1


def held_equiv(job: RunningJob, by_uuid: Mapping[str, SliceInfo]) -> float:
    """A running job's GPU-equivalents: its slices in the inventory, or its recorded value if larger."""
    known = sum(by_uuid[u].gpu_equiv for u in job.slices if u in by_uuid)
    return max(known, job.gpu_equiv)


class LimitTracker:
    """What each user and group holds: running jobs, plus this pass's placements."""

    def __init__(self, running: Iterable[RunningJob], by_uuid: Mapping[str, SliceInfo]) -> None:
        self.users: dict[str, Held] = {}
        self.groups: dict[str, Held] = {}
        for job in running:
            equiv = held_equiv(job, by_uuid)
            for held in (self.held(self.users, job.user), self.held(self.groups, job.group)):
                held.add(equiv, len(job.slices), job.interactive)

    @staticmethod
    def held(table: dict[str, Held], key: str) -> Held:
        held = table.get(key)
        if held is None:
            held = table[key] = Held()
        return held

    def account(self, user: str, group: str, limits: Limits, group_max_gpus: float | None) -> Account:
        return Account(limits, self.held(self.users, user), self.held(self.groups, group), group_max_gpus)


class Account:
    """One user's limits against what they and their group hold."""

    __slots__ = ("limits", "held", "group_held", "group_max_gpus", "limited")

    def __init__(self, limits: Limits, held: Held, group_held: Held, group_max_gpus: float | None) -> None:
        self.limits = limits
        self.held = held
        self.group_held = group_held
        self.group_max_gpus = group_max_gpus
        self.limited = (group_max_gpus is not None or limits.max_gpus is not None or limits.max_slices is not None
                        or limits.max_running_jobs is not None or limits.max_interactive is not None
                        or limits.max_runtime_s is not None)

    def add(self, equiv: float, nslices: int, interactive: bool) -> None:
        self.held.add(equiv, nslices, interactive)
        self.group_held.add(equiv, nslices, interactive)

    def add_sliceless(self, interactive: bool) -> None:
        """``add(0.0, 0, interactive)`` for a CPU-only job, without the additions of zero."""
        held, group_held = self.held, self.group_held
        held.jobs += 1
        group_held.jobs += 1
        if interactive:
            held.interactive += 1
            group_held.interactive += 1

    def gpu_room(self) -> float:
        """GPU-equivalents the user may still take under their own and their group's cap."""
        room = float("inf")
        if self.limits.max_gpus is not None:
            room = self.limits.max_gpus - self.held.gpus
        if self.group_max_gpus is not None:
            room = min(room, self.group_max_gpus - self.group_held.gpus)
        return room

    def refusal(self, equiv: float, nslices: int, interactive: bool) -> tuple[Reason, str] | None:
        """Why one more job taking ``equiv``/``nslices`` would break a limit, or None."""
        limits, held = self.limits, self.held
        if limits.max_running_jobs is not None and held.jobs + 1 > limits.max_running_jobs:
            return Reason.USER_LIMIT, f"Job Limit Reached ({held.jobs}/{limits.max_running_jobs})"
        if interactive and limits.max_interactive is not None and held.interactive + 1 > limits.max_interactive:
            return Reason.USER_LIMIT, f"Interactive Limit Reached ({held.interactive}/{limits.max_interactive})"
        if limits.max_slices is not None and held.slices + nslices > limits.max_slices:
            return Reason.USER_LIMIT, f"Slice Limit Reached ({held.slices}/{limits.max_slices})"
        return self.gpu_refusal(equiv)

    def gpu_refusal(self, equiv: float) -> tuple[Reason, str] | None:
        if equiv <= 0:
            return None
        held, cap = self.held, self.limits.max_gpus
        if cap is not None and held.gpus + equiv > cap + GPU_EPS:
            return Reason.USER_LIMIT, f"GPU Limit Reached ({fmt_num(held.gpus)}/{fmt_num(cap)})"
        group_cap = self.group_max_gpus
        if group_cap is not None and self.group_held.gpus + equiv > group_cap + GPU_EPS:
            return Reason.GROUP_LIMIT, f"Group GPU Limit Reached ({fmt_num(self.group_held.gpus)}/{fmt_num(group_cap)})"
        return None
