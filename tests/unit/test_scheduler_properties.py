"""Property tests of ``schedule`` on random inventories, limits, running sets and queues."""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ds01q.scheduler import GroupPolicy, Limits, PendingJob, RunningJob, Snapshot, limits_for, schedule
from ds01q.scheduler.limits import GPU_EPS, shape_for
from ds01q.scheduler.placement import fits_in
from ds01q.types import Reason, RequestKind, SliceInfo
from tests.builders import CPU_ONLY, HOUR, NOW, any_slice, gpus, make_gpu, mig

MIG_LAYOUTS = [
    ["3g.20gb", "2g.10gb", "2g.10gb"],
    ["1g.5gb"] * 7,
    ["4g.20gb", "3g.20gb"],
    ["7g.40gb"],
    ["2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"],
]
REQUESTS = [any_slice(), any_slice(), any_slice(9000), any_slice(30000), mig("2g.10gb"), mig("3g.20gb"),
            mig("1g.5gb"), gpus(1), gpus(1), gpus(2), gpus(2), gpus(3), CPU_ONLY]
USERS = ["u0", "u1", "u2", "u3", "u4", "u5"]
GROUP_OF = {"u0": "student", "u1": "student", "u2": "researcher", "u3": "admin", "u4": "capped", "u5": "admin"}
TIME_LIMITS = [0.5 * HOUR, HOUR, 2 * HOUR, 3 * HOUR, 8 * HOUR]
SETTINGS = settings(max_examples=150, deadline=None)

limits_st = st.builds(
    Limits,
    max_gpus=st.sampled_from([None, 0.5, 1.0, 2.0]),
    max_slices=st.sampled_from([None, 1, 2, 3]),
    max_running_jobs=st.sampled_from([None, 1, 2, 3]),
    max_interactive=st.sampled_from([None, 0, 1]),
    max_runtime_s=st.sampled_from([None, 4 * HOUR]),
    max_slices_per_job=st.sampled_from([None, 1, 2]),
    allowed_profiles=st.sampled_from([None, frozenset({"1g.5gb", "2g.10gb"})]),
    allow_full_gpu=st.booleans(),
)


@st.composite
def inventories(draw, whole_only: bool = False) -> tuple[SliceInfo, ...]:
    slices: list[SliceInfo] = []
    index = 0
    for node in range(draw(st.integers(1, 3))):
        kind = "whole" if whole_only else draw(st.sampled_from(["whole", "mig", "mixed"]))
        for _ in range(draw(st.integers(1, 4))):
            full = kind == "whole" or (kind == "mixed" and draw(st.booleans()))
            layout = "full" if full else draw(st.sampled_from(MIG_LAYOUTS))
            gpu = make_gpu(index, layout, node=f"n{node}")
            slices.extend(replace(s, drained=draw(st.booleans()) and draw(st.booleans())) for s in gpu)
            index += 1
    return tuple(slices)


@st.composite
def snapshots(draw, whole_only: bool = False) -> Snapshot:
    """Random snapshots; ``whole_only``: nodes of whole GPUs and --gpus requests (backfill's hard case)."""
    slices = draw(inventories(whole_only))
    requests = [gpus(1), gpus(1), gpus(2), gpus(3)] if whole_only else REQUESTS
    running: list[RunningJob] = []
    for k, s in enumerate(slices):
        if draw(st.booleans()):
            user = draw(st.sampled_from(USERS))
            running.append(RunningJob(1000 + k, user, GROUP_OF[user], (s.uuid,), NOW - draw(st.sampled_from(
                [0.0, 600.0, 3600.0])), draw(st.sampled_from(TIME_LIMITS)), interactive=draw(st.booleans())))
    pending = []
    for i in range(draw(st.integers(0, 30))):
        user = draw(st.sampled_from(USERS))
        pending.append(PendingJob(
            id=i + 1, user=user, group=GROUP_OF[user], request=draw(st.sampled_from(requests)),
            submitted_at=NOW - draw(st.sampled_from([0.0, 60.0, 3600.0, 86400.0])),
            time_limit_s=draw(st.sampled_from(TIME_LIMITS)), interactive=draw(st.booleans()),
            nice=draw(st.sampled_from([0, 0, 100])), held=draw(st.integers(0, 15)) == 0,
            dependency=draw(st.sampled_from(["none"] * 12 + ["waiting", "never"])),
            eligible_at=NOW + 60 if draw(st.integers(0, 15)) == 0 else 0.0))
    groups = {
        "student": GroupPolicy("student", 10, draw(limits_st)),
        "researcher": GroupPolicy("researcher", 20, draw(limits_st)),
        "admin": GroupPolicy("admin", 30),
        "capped": GroupPolicy("capped", 15, draw(limits_st), group_max_gpus=draw(st.sampled_from([0.5, 1.0, 2.0]))),
    }
    user_limits = {"u1": draw(limits_st)} if draw(st.booleans()) else {}
    usage = {u: draw(st.sampled_from([0.0, 1e4, 1e6])) for u in USERS}
    return Snapshot(now=NOW, slices=slices, pending=tuple(pending), running=tuple(running), groups=groups,
                    user_limits=user_limits, usage=usage,
                    policy=draw(st.sampled_from(["fifo", "priority", "backfill"])))


def placement_map(result) -> dict[int, tuple[str, ...]]:
    return {p.job_id: p.slices for p in result.placements}


def serves(job: PendingJob, slices: list[SliceInfo]) -> bool:
    req = job.request
    if req.kind == RequestKind.NONE:
        return not slices
    if req.kind == RequestKind.GPUS:
        return len(slices) == req.count and all(s.is_full for s in slices) and len({s.node for s in slices}) == 1
    if len(slices) != 1:
        return False
    if req.kind == RequestKind.MIG:
        return slices[0].profile == req.profile
    return slices[0].memory_mb >= req.min_mem_mb


@SETTINGS
@given(snapshots())
def test_slices_are_given_once_free_undrained_and_fitting(snap):
    result = schedule(snap)
    by_uuid = {s.uuid: s for s in snap.slices}
    held = {u for r in snap.running for u in r.slices}
    given_out = [u for p in result.placements for u in p.slices]
    assert len(given_out) == len(set(given_out))
    assert not set(given_out) & held
    assert all(u in by_uuid and not by_uuid[u].drained for u in given_out)
    jobs = {j.id: j for j in snap.pending}
    for job_id, uuids in placement_map(result).items():
        assert serves(jobs[job_id], [by_uuid[u] for u in uuids])
    assert set(result.pending) | set(placement_map(result)) == set(jobs)
    assert not set(result.pending) & set(placement_map(result))


@SETTINGS
@given(snapshots())
def test_no_placement_breaks_a_user_or_group_limit(snap):
    """Each placement, added in pass order to what is held, stays within every limit it adds to."""
    result = schedule(snap)
    by_uuid = {s.uuid: s for s in snap.slices}
    jobs = {j.id: j for j in snap.pending}
    held: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0, 0])  # gpus, slices, jobs, interactive
    group_gpus: dict[str, float] = defaultdict(float)
    for r in snap.running:
        equiv = sum(by_uuid[u].gpu_equiv for u in r.slices)
        h = held[r.user]
        h[0], h[1], h[2], h[3] = h[0] + equiv, h[1] + len(r.slices), h[2] + 1, h[3] + r.interactive
        group_gpus[r.group] += equiv
    for placement in result.placements:
        job, slices = jobs[placement.job_id], [by_uuid[u] for u in placement.slices]
        lim, h = limits_for(snap, job.user, job.group), held[job.user]
        for s in slices:
            assert lim.allow_full_gpu or not s.is_full
            assert lim.allowed_profiles is None or s.is_full or s.profile in lim.allowed_profiles
        assert lim.max_slices_per_job is None or len(slices) <= lim.max_slices_per_job
        assert lim.max_runtime_s is None or job.time_limit_s <= lim.max_runtime_s
        equiv = sum(s.gpu_equiv for s in slices)
        h[0], h[1], h[2], h[3] = h[0] + equiv, h[1] + len(slices), h[2] + 1, h[3] + job.interactive
        group_gpus[job.group] += equiv
        assert lim.max_running_jobs is None or h[2] <= lim.max_running_jobs
        if slices:
            assert lim.max_gpus is None or h[0] <= lim.max_gpus + GPU_EPS
            assert lim.max_slices is None or h[1] <= lim.max_slices
            cap = snap.groups[job.group].group_max_gpus
            assert cap is None or group_gpus[job.group] <= cap + GPU_EPS
        if job.interactive:
            assert lim.max_interactive is None or h[3] <= lim.max_interactive


@SETTINGS
@given(snapshots())
def test_resources_means_no_free_slice_fits(snap):
    result = schedule(snap)
    taken = {u for r in snap.running for u in r.slices} | {u for p in result.placements for u in p.slices}
    free = [s for s in snap.slices if not s.drained and s.uuid not in taken]
    jobs = {j.id: j for j in snap.pending}
    for job_id, info in result.pending.items():
        if info.reason == Reason.RESOURCES:
            job = jobs[job_id]
            shape = shape_for(job.request, limits_for(snap, job.user, job.group))
            assert not fits_in(shape, free), (job, info)


@SETTINGS
@given(st.one_of(snapshots(), snapshots(whole_only=True)))
def test_backfill_never_delays_the_reserved_job(snap):
    snap = replace(snap, policy="backfill")
    result = schedule(snap)
    reserved = [(j, info) for j, info in result.pending.items() if "(reserved)" in info.detail]
    assert len(reserved) <= 1
    if not reserved or reserved[0][1].estimated_start is None:
        return
    job_id, info = reserved[0]
    jobs = {j.id: j for j in snap.pending}
    # Run every placement of this pass as a running job of a user without limits:
    # the reserved job must still be able to start by its reservation.
    started = tuple(RunningJob(10_000 + p.job_id, "backfilled", "nolimits", p.slices, snap.now,
                               jobs[p.job_id].time_limit_s) for p in result.placements)
    again = schedule(replace(snap, pending=(jobs[job_id],), running=snap.running + started))
    assert again.placements == ()
    rerun = again.pending[job_id]
    assert rerun.reason == Reason.RESOURCES
    assert rerun.estimated_start is not None and rerun.estimated_start <= info.estimated_start


@SETTINGS
@given(snapshots(), st.randoms(use_true_random=False))
def test_same_snapshot_gives_the_same_result_in_any_pending_order(snap, rng: random.Random):
    first = schedule(snap)
    assert schedule(snap) == first
    shuffled = list(snap.pending)
    rng.shuffle(shuffled)
    second = schedule(replace(snap, pending=tuple(shuffled)))
    assert second == first
    assert second.placements == first.placements
    assert dict(second.factors) == dict(first.factors)
