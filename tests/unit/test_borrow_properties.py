"""Borrowing and reclaim over random snapshots: never a within-quota victim, never more than
needed, never a loop."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ds01q.mig.profiles import MODELS
from ds01q.scheduler import GroupPolicy, Limits, PendingJob, RunningJob, Snapshot, schedule
from ds01q.scheduler.borrow import borrowers
from ds01q.scheduler.limits import limits_for, shape_for
from ds01q.types import Reason, RequestKind, ResourceRequest, SliceInfo

A100 = MODELS["A100-40GB"]
CUTS = (("2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"), ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"),
        ("1g.5gb",) * 7, ("3g.20gb", "3g.20gb"))
USERS = ("u0", "u1", "u2", "u3")
REQUESTS = (ResourceRequest(RequestKind.MIG, "1g.5gb"), ResourceRequest(RequestKind.MIG, "2g.10gb"),
            ResourceRequest(RequestKind.MIG, "3g.20gb"), ResourceRequest(RequestKind.ANY),
            ResourceRequest(RequestKind.GPUS, count=1))


def slices_of(cuts: list[int], full_gpus: int) -> tuple[SliceInfo, ...]:
    out = []
    for g, c in enumerate(cuts):
        for k, name in enumerate(CUTS[c]):
            p = A100.profile(name)
            assert p is not None
            out.append(SliceInfo(f"MIG-{g}-{k}", f"GPU-{g}", name, p.compute_slices, 7, p.memory_mb,
                                 gpu_name="NVIDIA A100-PCIE-40GB"))
    for f in range(full_gpus):
        out.append(SliceInfo(f"GPU-F{f}", f"GPU-F{f}", "full", 7, 7, 40960, gpu_name="NVIDIA A100-PCIE-40GB"))
    return tuple(out)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    cuts = draw(st.lists(st.integers(0, len(CUTS) - 1), min_size=1, max_size=2))
    slices = slices_of(cuts, draw(st.integers(0, 2)))
    caps = draw(st.lists(st.sampled_from((0.15, 0.3, 0.6, 1.0)), min_size=4, max_size=4))
    lend = draw(st.lists(st.booleans(), min_size=4, max_size=4))
    running = []
    used = draw(st.lists(st.sampled_from([s.uuid for s in slices]), unique=True, max_size=len(slices)))
    for i, uuid in enumerate(used):
        u = draw(st.integers(0, 3))
        running.append(RunningJob(id=100 + i, user=USERS[u], group=f"g{u}", slices=(uuid,),
                                  started_at=float(draw(st.integers(0, 50))), time_limit_s=1e6,
                                  interactive=draw(st.booleans())))
    pending = []
    for i in range(draw(st.integers(0, 6))):
        u = draw(st.integers(0, 3))
        pending.append(PendingJob(id=1 + i, user=USERS[u], group=f"g{u}", request=draw(st.sampled_from(REQUESTS)),
                                  submitted_at=float(i), time_limit_s=3600.0, interactive=draw(st.booleans())))
    groups = {f"g{u}": GroupPolicy(f"g{u}", limits=Limits(max_gpus=caps[u]), borrowing=lend[u],
                                   borrow_interactive=lend[(u + 1) % 4]) for u in range(4)}
    return Snapshot(now=100.0, slices=slices, pending=tuple(pending), running=tuple(running), groups=groups,
                    policy=draw(st.sampled_from(("backfill", "priority"))))


def quota_held(snap: Snapshot) -> dict[int, bool]:
    """Per running job: is it within its user's max_gpus (oldest first)?"""
    return {j.id: j.id not in borrowers(snap) for j in snap.running}


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_victims_are_borrowers_and_only_as_many_as_needed(snap: Snapshot) -> None:
    result = schedule(snap)
    lenders = borrowers(snap)
    by_uuid = {s.uuid: s for s in snap.slices}
    held = {u for j in snap.running for u in j.slices}
    placed = {u for p in result.placements for u in p.slices}
    free_after = {s.uuid for s in snap.slices if s.uuid not in held and s.uuid not in placed}
    ids = [v.job_id for v in result.victims]
    assert len(ids) == len(set(ids))  # a borrower is named once
    assert set(ids) <= lenders  # never a job within its quota
    for_jobs = [v.for_job for v in result.victims]
    assert len(for_jobs) == len(set(for_jobs))  # one victim per waiting job at most (single-slice jobs here)
    pending = {j.id: j for j in snap.pending}
    for v in result.victims:
        waiter = pending[v.for_job]
        info = result.pending[v.for_job]
        assert info.reason == Reason.RESOURCES  # within quota, waiting only for slices
        shape = shape_for(waiter.request, limits_for(snap, waiter.user, waiter.group))
        accepts = [u for u in v.slices if shape.accepts(by_uuid[u])]
        assert accepts  # the victim frees a fitting slice
        assert not [u for u in free_after if shape.accepts(by_uuid[u]) and waiter.request.kind != RequestKind.GPUS]
    # borrowing placements only for groups that lend, and interactive only where allowed
    for p in result.placements:
        job = pending[p.job_id]
        if p.job_id in result.borrowing:
            g = snap.groups[job.group]
            assert g.borrowing and (not job.interactive or g.borrow_interactive)


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_reclaim_never_loops(snap: Snapshot) -> None:
    """Frozen world (nothing ends by itself): start what is placed, stop and requeue the victims,
    and pass again. Every job is preempted at most once and the passes reach a fixed point."""
    preempted: dict[int, int] = {}
    now = snap.now
    for _ in range(15):
        result = schedule(snap)
        if not result.placements and not result.victims:
            break
        pending = {j.id: j for j in snap.pending}
        running = [j for j in snap.running if j.id not in {v.job_id for v in result.victims}]
        requeued = []
        for v in result.victims:
            preempted[v.job_id] = preempted.get(v.job_id, 0) + 1
            job = next(j for j in snap.running if j.id == v.job_id)
            requeued.append(PendingJob(id=job.id, user=job.user, group=job.group,
                                       request=_request(snap, job),
                                       submitted_at=job.started_at, time_limit_s=3600.0,
                                       interactive=job.interactive, requeue_count=1))
        for p in result.placements:
            job = pending.pop(p.job_id)
            running.append(RunningJob(id=job.id, user=job.user, group=job.group, slices=p.slices, started_at=now,
                                      time_limit_s=job.time_limit_s, interactive=job.interactive))
        now += 1.0
        snap = replace(snap, now=now, running=tuple(running), pending=(*pending.values(), *requeued))
    else:
        raise AssertionError("no fixed point after 15 passes")
    assert all(n == 1 for n in preempted.values()), preempted


def _request(snap: Snapshot, job: RunningJob) -> ResourceRequest:
    s = next(s for s in snap.slices if s.uuid == job.slices[0])
    return ResourceRequest(RequestKind.GPUS, count=1) if s.is_full else ResourceRequest(RequestKind.MIG, s.profile)


def test_hints_name_a_free_whole_gpu_and_borrowing() -> None:
    slices = slices_of([0], 1)  # 3x2g.10gb + 1g.5gb, and one whole GPU
    running = tuple(RunningJob(id=100 + i, user="u1", group="g1", slices=(s.uuid,), started_at=0.0, time_limit_s=1e6)
                    for i, s in enumerate(slices) if s.profile == "2g.10gb")
    groups = {"g0": GroupPolicy("g0", limits=Limits(max_gpus=0.3), borrowing=True),
              "g1": GroupPolicy("g1")}
    pending = (PendingJob(id=1, user="u0", group="g0", request=ResourceRequest(RequestKind.MIG, "2g.10gb"),
                          submitted_at=0.0, time_limit_s=3600.0),)
    result = schedule(Snapshot(now=10.0, slices=slices, pending=pending, running=running, groups=groups))
    assert "a whole GPU is free now: --gpus 1 (1.0 GPU-equivalent instead of 0.29)" in result.pending[1].detail
    # u0 holds one 2g.10gb (its quota); a second one waits on GPU Limit, and its group lends
    mine = RunningJob(id=300, user="u0", group="g0", slices=(running[0].slices[0],), started_at=0.0,
                      time_limit_s=1e6)
    result = schedule(Snapshot(now=10.0, slices=slices, pending=pending, running=(mine, *running[1:]), groups=groups))
    info = result.pending[1]
    assert info.reason == Reason.USER_LIMIT and "borrowing: starts on a slice nobody within quota" in info.detail
