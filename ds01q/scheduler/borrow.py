"""Borrowing beyond ``max_gpus`` and reclaim by preemption. Pure, like the rest of the pass.

A user's ``max_gpus`` (from their group) is a guarantee. In a group with
``borrowing: true`` a job that only ``max_gpus`` keeps waiting may *borrow*: it
starts after every job within its quota was considered, and only on a free slice
that no waiting within-quota job could take (nor the backfill reservation).
Interactive jobs borrow only where the group sets ``borrow_interactive``.

Who borrows is decided from the running jobs: per user, oldest first, the jobs
whose GPU-equivalents go beyond ``max_gpus`` are the borrowers (so when an old
job ends, a younger one becomes within quota again).

Reclaim: for each within-quota job waiting on Resources, in priority order,
``victims`` looks at the slices it could take. A slice already being freed (its
job is stopping) or one already claimed for an earlier waiter is used first and
costs nothing; otherwise the youngest borrower holding a fitting slice is named
(for N whole GPUs: on the node needing the fewest, youngest borrowers). A job
that is not a borrower is never named, a waiter gets at most what it needs, and
a borrower is named once.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ds01q.scheduler.limits import GPU_EPS, Account, held_equiv, limits_for
from ds01q.scheduler.placement import Shape
from ds01q.scheduler.snapshot import PendingJob, RunningJob, Snapshot, Victim
from ds01q.types import Reason, RequestKind, SliceInfo

__all__ = ["borrow_pass", "borrowers", "may_borrow", "reclaim", "relaxed", "victims"]


def borrowers(snapshot: Snapshot) -> frozenset[int]:
    """Running jobs beyond their user's ``max_gpus`` in groups that lend (youngest count as beyond)."""
    by_uuid = {s.uuid: s for s in snapshot.slices}
    per_user: dict[tuple[str, str], list[RunningJob]] = defaultdict(list)
    for job in snapshot.running:
        policy = snapshot.groups.get(job.group)
        if policy is not None and policy.borrowing:
            per_user[(job.user, job.group)].append(job)
    out: set[int] = set()
    for (user, group), jobs in per_user.items():
        cap = limits_for(snapshot, user, group).max_gpus
        if cap is None:
            continue
        total = 0.0
        for job in sorted(jobs, key=lambda j: (j.started_at, j.id)):
            total += held_equiv(job, by_uuid)
            if total > cap + GPU_EPS:
                out.add(job.id)
    return frozenset(out)


def may_borrow(snapshot: Snapshot, group: str, interactive: bool) -> bool:
    policy = snapshot.groups.get(group)
    return policy is not None and policy.borrowing and (not interactive or policy.borrow_interactive)


def relaxed(account: Account) -> Account:
    """The same holdings without the ``max_gpus`` cap (the group cap and the other limits stay)."""
    return Account(replace(account.limits, max_gpus=None), account.held, account.group_held, account.group_max_gpus)


def _youngest_first(jobs: Iterable[RunningJob]) -> list[RunningJob]:
    return sorted(jobs, key=lambda j: (-j.started_at, -j.id))


def victims(snapshot: Snapshot, waiters: Sequence[tuple[int, Shape, Sequence[SliceInfo]]],
            free: Iterable[str], lenders: frozenset[int]) -> tuple[Victim, ...]:
    """The fewest, youngest borrowers to preempt for ``waiters`` (job id, shape, usable slices accepted).

    ``free``: slices free after this pass (the pool); ``lenders``: the borrowers.
    """
    holder: dict[str, RunningJob] = {}
    for job in snapshot.running:
        for u in job.slices:
            holder[u] = job
    free_set = set(free)
    claimed: set[str] = set()
    named: set[int] = set()
    out: list[Victim] = []
    for job_id, shape, accepted in waiters:
        if shape.kind == RequestKind.GPUS:
            pick = _for_gpus(shape.request.count, accepted, holder, free_set, claimed, named, lenders)
        else:
            pick = _for_one(accepted, holder, free_set, claimed, named, lenders)
        if pick is None:
            continue
        slices, chosen = pick
        claimed.update(slices)
        for victim in chosen:
            named.add(victim.id)
            claimed.update(victim.slices)
            out.append(Victim(victim.id, job_id, victim.slices))
    return tuple(out)


def _soon_free(u: str, holder: Mapping[str, RunningJob], free: set[str], claimed: set[str]) -> bool:
    if u in claimed:
        return False
    job = holder.get(u)
    return u in free or (job is not None and job.stopping)


def _for_one(accepted: Sequence[SliceInfo], holder: Mapping[str, RunningJob], free: set[str], claimed: set[str],
             named: set[int], lenders: frozenset[int]) -> tuple[list[str], list[RunningJob]] | None:
    for s in accepted:
        if _soon_free(s.uuid, holder, free, claimed):
            return [s.uuid], []  # something is on its way out already: preempt nobody
    owners = {holder[s.uuid].id: holder[s.uuid] for s in accepted
              if s.uuid not in claimed and s.uuid in holder and holder[s.uuid].id in lenders
              and holder[s.uuid].id not in named and not holder[s.uuid].stopping}
    if not owners:
        return None
    victim = _youngest_first(owners.values())[0]
    return [u for u in victim.slices if u in {s.uuid for s in accepted}][:1], [victim]


def _for_gpus(need: int, accepted: Sequence[SliceInfo], holder: Mapping[str, RunningJob], free: set[str],
              claimed: set[str], named: set[int], lenders: frozenset[int]) \
        -> tuple[list[str], list[RunningJob]] | None:
    per_node: dict[str, list[SliceInfo]] = defaultdict(list)
    for s in accepted:
        per_node[s.node].append(s)
    best: tuple[tuple[int, float], list[str], list[RunningJob]] | None = None
    for node in sorted(per_node):
        group = per_node[node]
        ready = [s.uuid for s in group if _soon_free(s.uuid, holder, free, claimed)][:need]
        if len(ready) >= need:
            return ready, []
        by_job: dict[int, list[str]] = defaultdict(list)
        jobs: dict[int, RunningJob] = {}
        for s in group:
            job = holder.get(s.uuid)
            if (s.uuid in claimed or s.uuid in ready or job is None or job.id not in lenders or job.id in named
                    or job.stopping):
                continue
            by_job[job.id].append(s.uuid)
            jobs[job.id] = job
        taken, chosen = list(ready), []
        for job in sorted(jobs.values(), key=lambda j: (-len(by_job[j.id]), -j.started_at, -j.id)):
            if len(taken) >= need:
                break
            taken += by_job[job.id]
            chosen.append(job)
        if len(taken) < need:
            continue
        # drop any chosen job the others make unnecessary (oldest first)
        for job in sorted(chosen, key=lambda j: (j.started_at, j.id)):
            if len(taken) - len(by_job[job.id]) >= need:
                chosen.remove(job)
                taken = [u for u in taken if u not in by_job[job.id]]
        key = (len(chosen), -min((j.started_at for j in chosen), default=0.0))
        if best is None or key < best[0]:
            best = (key, taken[:need], chosen)
    return None if best is None else (best[1], best[2])


# The pass's steps 6 and 7 (``p`` is cycle._Pass after its main loop; its per-shape and per-user state is pass_state.py).
def borrow_pass(p: Any, jobs: Sequence[PendingJob]) -> frozenset[int]:
    """Step 6: jobs that only ``max_gpus`` stops start on slices no within-quota waiter could take."""
    snap = p.snap
    if not any(g.borrowing for g in snap.groups.values()):
        return frozenset()
    wanted: set[str] = set()
    for job in jobs:
        wait = p.waiting.get(job.id)
        if wait is not None and wait[2] is not None and wait[0] in (Reason.RESOURCES, Reason.PRIORITY):
            wanted.update(s.uuid for s in _takeable(p, job, wait[2]))
    out: set[int] = set()
    for job in jobs:
        wait = p.waiting.get(job.id)
        if wait is None or wait[0] != Reason.USER_LIMIT or not may_borrow(snap, job.group, job.interactive):
            continue
        user = p.users.get(job.user)
        if user is None or user.group != job.group:
            user = p._user(job)
        state = user.shapes.get(id(job.request)) or p._new_shape(job.request, user)
        if state.static is not None or state.nslices == 0 or job.time_limit_s > user.max_runtime_s:
            continue
        account = relaxed(user.account)
        if account.refusal(state.equiv, state.nslices, job.interactive) is not None:
            continue
        exclude = set(wanted)
        if p.reservation is not None:
            exclude |= p.reservation.exclude_for(p.now, job.time_limit_s)
        found = p.pool.find(state.shape, frozenset(exclude))
        if found is None:
            continue
        equiv = sum(s.gpu_equiv for s in found)
        if account.gpu_refusal(equiv) is not None:
            continue
        p._place(job, user.account, found, equiv)
        del p.waiting[job.id]
        out.add(job.id)
    for job in jobs:  # the rest that could borrow: say so
        wait = p.waiting.get(job.id)
        if (wait is not None and wait[0] == Reason.USER_LIMIT and job.id not in out
                and wait[1].startswith("GPU Limit") and may_borrow(snap, job.group, job.interactive)):
            p.waiting[job.id] = (wait[0], wait[1] + "; borrowing: starts on a slice nobody within quota "
                                    "waits for (preemptible)", wait[2], wait[3])
    return frozenset(out)

def reclaim(p: Any, jobs: Sequence[PendingJob], lenders: frozenset[int]) -> tuple[Victim, ...]:
    """Step 7: the borrowers to preempt for within-quota jobs waiting on Resources."""
    if not lenders:
        return ()
    waiters = []
    for job in jobs:
        wait = p.waiting.get(job.id)
        if wait is not None and wait[0] == Reason.RESOURCES and wait[2] is not None:
            waiters.append((job.id, wait[2].shape, _takeable(p, job, wait[2])))
    return victims(p.snap, waiters, p.pool.uuids(), lenders)


def _takeable(p: Any, job: PendingJob, state: Any) -> tuple[SliceInfo, ...]:
    """The waiter's candidate slices that its own limits let it take (its GPU room): freeing
    any other slice for it would not start it, so it is neither reserved from borrowers nor
    reclaimed (``any`` may fit a whole GPU its quota cannot hold)."""
    user = p.users.get(job.user)
    if user is None or user.group != job.group:
        user = p._user(job)
    room = user.account.gpu_room() + GPU_EPS
    if state.shape.kind == RequestKind.GPUS:
        return state.candidates if state.shape.request.count <= room else ()
    return tuple(s for s in state.candidates if s.gpu_equiv <= room)
