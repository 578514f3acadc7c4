"""Builders for scheduler tests: inventories, jobs and snapshots with readable defaults."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from ds01q.scheduler.snapshot import GroupPolicy, Limits, PendingJob, RunningJob, Snapshot, Weights
from ds01q.types import FULL_PROFILE, RequestKind, ResourceRequest, SliceInfo

HOUR = 3600.0
NOW = 1_000_000.0

# profile -> (compute slices, memory MiB), A100 40GB and 80GB profiles
PROFILES: dict[str, tuple[int, int]] = {
    "1g.5gb": (1, 4864),
    "1g.10gb": (1, 9728),
    "2g.10gb": (2, 9984),
    "2g.20gb": (2, 19968),
    "3g.20gb": (3, 19968),
    "3g.40gb": (3, 40192),
    "4g.20gb": (4, 19968),
    "4g.40gb": (4, 40192),
    "7g.40gb": (7, 40192),
    "7g.80gb": (7, 81920),
    FULL_PROFILE: (7, 40960),
}


def make_gpu(index: int, profiles: Sequence[str] | str = FULL_PROFILE, node: str = "local",
             drained: Iterable[int] = ()) -> list[SliceInfo]:
    """One GPU: ``"full"`` (MIG off) or a list of MIG profiles. ``drained``: slice positions."""
    gpu_uuid = f"GPU-{index:04d}"
    if isinstance(profiles, str):
        profiles = [profiles]
    out = []
    for k, profile in enumerate(profiles):
        compute, mem = PROFILES[profile]
        uuid = gpu_uuid if profile == FULL_PROFILE else f"MIG-{index:04d}-{k}"
        out.append(SliceInfo(uuid=uuid, gpu_uuid=gpu_uuid, profile=profile, compute_slices=compute,
                             gpu_compute_slices=7, memory_mb=mem, node=node, gpu_name="NVIDIA A100",
                             drained=k in set(drained)))
    return out


def make_slices(*gpus: Sequence[str] | str, node: str = "local") -> tuple[SliceInfo, ...]:
    """``make_slices(["2g.10gb"] * 3, "full")``: GPU 0 with three 2g slices, GPU 1 whole."""
    out: list[SliceInfo] = []
    for index, profiles in enumerate(gpus):
        out.extend(make_gpu(index, profiles, node=node))
    return tuple(out)


def make_nodes(nodes: int, gpus_per_node: int) -> tuple[SliceInfo, ...]:
    """Whole GPUs (MIG off) on ``nodes`` nodes named n0, n1, ..."""
    out: list[SliceInfo] = []
    for n in range(nodes):
        for g in range(gpus_per_node):
            out.extend(make_gpu(n * gpus_per_node + g, FULL_PROFILE, node=f"n{n}"))
    return tuple(out)


def drain(slices: Iterable[SliceInfo], *uuids: str) -> tuple[SliceInfo, ...]:
    from dataclasses import replace

    return tuple(replace(s, drained=True) if s.uuid in uuids else s for s in slices)


def any_slice(min_mem_mb: int = 0) -> ResourceRequest:
    return ResourceRequest(RequestKind.ANY, min_mem_mb=min_mem_mb)


def mig(profile: str) -> ResourceRequest:
    return ResourceRequest(RequestKind.MIG, profile=profile)


def gpus(count: int) -> ResourceRequest:
    return ResourceRequest(RequestKind.GPUS, count=count)


CPU_ONLY = ResourceRequest(RequestKind.NONE, count=0)


def make_job(id: int, user: str = "bob", group: str = "student", request: ResourceRequest | None = None,
             submitted_at: float = NOW - 60, time_limit_s: float = HOUR, **kw: object) -> PendingJob:
    return PendingJob(id=id, user=user, group=group, request=request or any_slice(), submitted_at=submitted_at,
                      time_limit_s=time_limit_s, **kw)  # type: ignore[arg-type]


def make_running(id: int, slices: Sequence[str], user: str = "bob", group: str = "student",
                 started_at: float = NOW - 600, time_limit_s: float = HOUR, **kw: object) -> RunningJob:
    return RunningJob(id=id, user=user, group=group, slices=tuple(slices), started_at=started_at,
                      time_limit_s=time_limit_s, **kw)  # type: ignore[arg-type]


STUDENT = Limits(max_gpus=1.0, max_running_jobs=3, max_runtime_s=24 * HOUR)
RESEARCHER = Limits(max_gpus=2.0, max_running_jobs=5, max_runtime_s=48 * HOUR)


def default_groups() -> dict[str, GroupPolicy]:
    """design.md's example groups."""
    return {
        "student": GroupPolicy("student", priority=10, limits=STUDENT),
        "researcher": GroupPolicy("researcher", priority=20, limits=RESEARCHER),
        "admin": GroupPolicy("admin", priority=30),
    }


def make_snapshot(slices: Sequence[SliceInfo], pending: Sequence[PendingJob] = (),
                  running: Sequence[RunningJob] = (), policy: str = "backfill", now: float = NOW,
                  groups: dict[str, GroupPolicy] | None = None, **kw: object) -> Snapshot:
    return Snapshot(now=now, slices=tuple(slices), pending=tuple(pending), running=tuple(running),
                    groups=default_groups() if groups is None else groups, policy=policy,
                    weights=kw.pop("weights", Weights()), **kw)  # type: ignore[arg-type]
