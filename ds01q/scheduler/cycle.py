"""One scheduling pass: ``schedule(snapshot) -> CycleResult``. Pure.

Steps:

1. Priorities and factors for every pending job (``priority.py``).
2. Order the jobs: by submit time (``fifo``) or by priority (``priority``,
   ``backfill``); ties by submit time, then id.
3. Consider each job in that order. It waits, with the first reason that holds:
   ``Held``; ``DependencyNeverSatisfied``; ``Dependency``; ``Priority`` with
   detail ``BeginTime`` while ``eligible_at > now`` (estimated start =
   ``eligible_at``); ``JobArrayTaskLimit`` while its array already runs its
   ``%throttle`` tasks (``Snapshot.array_throttle``); ``UserLimit`` for a hard limit (see ``limits.py``);
   ``NeverFits`` when no slice of the inventory, drained or not, could serve
   its shape; ``Draining`` when only drained slices could; ``UserLimit`` /
   ``GroupLimit`` when even the smallest slice it could take breaks what the
   user or group may hold; ``Priority`` behind a blocked job (``fifo``) or a
   reservation (``backfill``); ``Resources`` when no free slice fits; and
   ``UserLimit`` / ``GroupLimit`` again when every free slice that fits would
   break ``max_gpus``. Otherwise it is placed on the best fit (``placement.py``).
   Limit-blocked jobs are skipped: they never block other jobs.
6. Borrowing (``borrow.py``): in groups with ``borrowing``, jobs that only
   ``max_gpus`` stopped start on free slices no waiting within-quota job could take.
7. Reclaim: for within-quota jobs waiting on Resources, the fewest, youngest
   borrowers holding a fitting slice are named in ``CycleResult.victims``.
4. Policies: ``fifo`` is strict: once a GPU job waits on Resources, no later
   GPU job starts in this pass (CPU-only jobs still do). ``priority`` tries
   every job, first fit, no reservation. ``backfill`` is ``priority`` plus one
   EASY reservation for the first job waiting on Resources (``backfill.py``).
5. Estimated starts, per shape: the earliest time its candidate slices are
   free given running jobs' time limits, this pass's placements and the
   reservation (a lower bound for all but the reserved job, whose estimate is
   its reservation). ``CycleResult.pending`` and ``factors`` build each value,
   and each shape's estimate, when first read (``views.py``).

Cost: shapes (request x user-limits) are searched once per pass each, except
for one search per placement; users with equal limits share one table of
shapes; per job the pass does a few dict look-ups, in one loop (``_Pass.run``).
"""
from __future__ import annotations

import math
from dataclasses import replace
from collections import Counter
from collections.abc import Iterable, Mapping

from ds01q.errors import ConfigError
from ds01q.scheduler.borrow import borrow_pass, borrowers, reclaim
from ds01q.scheduler.backfill import NO_SLICES, Reservation, availability, hold_reserved
from ds01q.scheduler.limits import Account, LimitTracker, limits_for, runtime_refusal, shape_for
from ds01q.scheduler.placement import FreePool, Shape, earliest_fit, fits_in, least_loaded_node, shape_equiv
from ds01q.scheduler.priority import BACKFILL, FIFO, POLICIES, compute_priorities, order_pending
from ds01q.scheduler.snapshot import CycleResult, Limits, PendingInfo, PendingJob, Placement, Snapshot
from ds01q.scheduler.pass_state import Matching, ShapeState, UserState, Wait
from ds01q.scheduler.views import LazyMapping
from ds01q.types import Reason, RequestKind, ResourceRequest, SliceInfo


class _Pass:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snap = snapshot
        self.now = snapshot.now
        by_uuid = {s.uuid: s for s in snapshot.slices}
        held = {u for job in snapshot.running for u in job.slices}
        self.busy: Counter[str] = Counter(by_uuid[u].gpu_uuid for u in held if u in by_uuid)
        self.pool = FreePool((s for s in snapshot.slices if not s.drained and s.uuid not in held), self.busy)
        self.avail = availability(self.now, snapshot.slices, snapshot.running)
        self.tracker = LimitTracker(snapshot.running, by_uuid)
        self.users: dict[str, UserState] = {}  # by user name, for their latest group
        self.user_groups: dict[tuple[str, str], UserState] = {}
        self.limit_ids: dict[tuple[Limits, str], int] = {}
        self.index_shapes: list[dict[int, ShapeState]] = []  # limits index -> id(request) -> shape
        self.group_limits: dict[str, tuple[Limits, str, int]] = {}  # for users without their own limits
        self.requests: dict[int, ResourceRequest] = {}  # id(request) -> the first equal request seen
        self.canonical: dict[ResourceRequest, ResourceRequest] = {}
        self.shapes: dict[tuple[int, int], ShapeState] = {}  # (id of canonical request, limits index)
        self.matching: dict[Shape, Matching] = {}
        self.reservation: Reservation | None = None
        self.fifo_head: ShapeState | None = None
        self.fifo_head_id = 0
        self.placements: list[Placement] = []
        self.waiting: dict[int, Wait] = {}
        self.throttle = snapshot.array_throttle  # array id -> tasks allowed to run at once
        self.array_running: Counter[int] = Counter(j.array_id for j in snapshot.running
                                                   if j.array_id is not None and j.array_id in self.throttle)
        self.node_load: Counter[str] = Counter(j.node for j in snapshot.running if j.node)  # jobs per node

    def run(self, jobs: Iterable[PendingJob]) -> None:
        """Consider each job in order: place it, or record why it waits (step 3).

        This loop (and ``_consider``) runs once per pending job, so its common cases are inline (a
        known user and shape, a remembered limit refusal, a CPU-only placement,
        a shape with no free slice left) and only the rare ones call methods.
        """
        now, waiting, users, placements = self.now, self.waiting, self.users, self.placements
        throttle, array_running = self.throttle, self.array_running
        for job in jobs:
            if job.held or job.dependency != "none" or job.eligible_at > now:
                wait = self._not_ready(job)
                if wait is not None:
                    waiting[job.id] = wait
                    continue
            if throttle and job.array_id in throttle:
                if array_running[job.array_id] >= throttle[job.array_id]:  # type: ignore[index]
                    waiting[job.id] = (Reason.ARRAY_TASK_LIMIT, f"array {job.array_id} runs its "
                                       f"{throttle[job.array_id]} tasks at once", None, None)  # type: ignore[index]
                    continue
                placed = len(placements)
                self._consider(job)
                if len(placements) > placed:
                    array_running[job.array_id] += 1  # type: ignore[index]
                continue
            self._consider(job)

    def _consider(self, job: PendingJob) -> None:
        """Place ``job`` or record why it waits (its holds, dependencies and begin time already checked)."""
        waiting, users, placements = self.waiting, self.users, self.placements
        user = users.get(job.user)
        if user is None or user.group != job.group:
            user = self._user(job)
        state = user.shapes.get(id(job.request)) or self._new_shape(job.request, user)
        wait = state.static
        if wait is None:
            account = user.account
            if account.limited:
                if job.time_limit_s > user.max_runtime_s:
                    detail = runtime_refusal(job.time_limit_s, account.limits, user.owner) or ""
                    wait = Reason.USER_LIMIT, detail, None, None
                else:
                    refused = user.refused_interactive if job.interactive else user.refused
                    wait = refused.get(state)
                    if wait is None:
                        refusal = account.refusal(state.equiv, state.nslices, job.interactive)
                        if refusal is not None:
                            wait = refused[state] = (refusal[0], refusal[1], None, None)
            if wait is None:
                if state.nslices == 0:  # CPU only: _place without slices
                    node = None
                    if self.snap.nodes is not None:  # several nodes: the least loaded that takes jobs
                        node = least_loaded_node(self.snap.nodes, self.node_load)
                        if node is None:
                            waiting[job.id] = (Reason.RESOURCES, "no node is up and not drained", None, None)
                            return
                        self.node_load[node] += 1
                    account.add_sliceless(job.interactive)
                    placements.append(Placement(job.id, (), node))
                    return
                if self.fifo_head is not None:
                    wait = state.behind_wait or self._behind(state)
                elif state.exhausted:
                    wait = state.resources_wait
                elif job.time_limit_s >= state.blocked_from:
                    wait = state.behind_wait or self._behind(state)
                else:
                    wait = self._try_gpus(job, state, account)
                    if wait is None:
                        return
        waiting[job.id] = wait

    def _not_ready(self, job: PendingJob) -> Wait | None:
        if job.held:
            return Reason.HELD, "held", None, None
        if job.dependency == "never":
            return Reason.DEPENDENCY_NEVER_SATISFIED, "a dependency can never be satisfied", None, None
        if job.dependency == "waiting":
            return Reason.DEPENDENCY, "waiting for a dependency", None, None
        if job.eligible_at > self.now:
            return Reason.PRIORITY, "BeginTime", None, job.eligible_at
        return None

    def _user(self, job: PendingJob) -> UserState:
        user = self.user_groups.get((job.user, job.group))
        if user is None:
            if job.user in self.snap.user_limits:
                limits, owner, index = self._limits_index(job.user, job.group, f" of user {job.user}")
            else:  # the group's limits: the same for each member
                found = self.group_limits.get(job.group)
                if found is None:
                    found = self.group_limits[job.group] = self._limits_index(job.user, job.group,
                                                                              f" of group {job.group}")
                limits, owner, index = found
            policy = self.snap.groups.get(job.group)
            account = self.tracker.account(job.user, job.group, limits, policy.group_max_gpus if policy else None)
            user = self.user_groups[(job.user, job.group)] = UserState(job.group, account, index, owner,
                                                                        self.index_shapes[index])
        self.users[job.user] = user
        return user

    def _limits_index(self, user: str, group: str, owner: str) -> tuple[Limits, str, int]:
        limits = limits_for(self.snap, user, group)
        index = self.limit_ids.setdefault((limits, owner), len(self.limit_ids))
        if index == len(self.index_shapes):
            self.index_shapes.append({})
        return limits, owner, index

    def _new_shape(self, request: ResourceRequest, user: UserState) -> ShapeState:
        # The snapshot holds every request for the whole pass, so id() is stable; equal
        # requests in distinct objects map to the first one seen (one hash per object).
        canonical = self.requests.get(id(request))
        if canonical is None:
            canonical = self.requests[id(request)] = self.canonical.setdefault(request, request)
        key = (id(canonical), user.index)
        state = self.shapes.get(key)
        if state is None:
            limits = user.account.limits
            shape = shape_for(canonical, limits)
            state = self.shapes[key] = ShapeState(shape, self._matching(shape), limits, user.owner)
        user.shapes[id(request)] = state
        return state

    def _matching(self, shape: Shape) -> Matching:
        found = self.matching.get(shape)
        if found is None:
            everywhere = tuple(s for s in self.snap.slices if shape.accepts(s))
            usable = tuple(s for s in everywhere if not s.drained)
            found = self.matching[shape] = Matching(everywhere, usable, shape_equiv(shape, usable or everywhere),
                                                     fits_in(shape, everywhere), fits_in(shape, usable))
        return found

    def _try_gpus(self, job: PendingJob, state: ShapeState, account: Account) -> Wait | None:
        limit_s = job.time_limit_s
        exclude = self.reservation.exclude_for(self.now, limit_s) if self.reservation else NO_SLICES
        found = self.pool.find(state.shape, exclude)
        if found is None:
            if exclude and self.pool.find(state.shape) is not None:
                state.blocked_from = limit_s
                return state.behind_wait or self._behind(state)
            state.exhausted = True
            return self._on_resources(job, state)
        equiv = sum(s.gpu_equiv for s in found)
        refusal = account.gpu_refusal(equiv)
        if refusal is not None:
            found = self.pool.find(state.shape, exclude, max_equiv=account.gpu_room())
            if found is None:
                return refusal[0], refusal[1], None, None
            equiv = sum(s.gpu_equiv for s in found)
        self._place(job, account, found, equiv)
        return None

    def _behind(self, state: ShapeState) -> Wait:
        if self.fifo_head is not None:
            detail = f"waiting behind job {self.fifo_head_id} (fifo)"
        else:
            assert self.reservation is not None
            detail = f"waiting behind reserved job {self.reservation.job_id}"
        state.behind_wait = (Reason.PRIORITY, detail, state, None)
        return state.behind_wait

    def _on_resources(self, job: PendingJob, state: ShapeState) -> Wait:
        policy = self.snap.policy
        if policy == FIFO:
            self.fifo_head, self.fifo_head_id = state, job.id
        elif policy == BACKFILL and self.reservation is None:
            fit = earliest_fit(state.shape, state.candidates, self.avail, self.busy)
            if fit is not None:
                start = fit[0]
                self.reservation = Reservation(job.id, start, start + job.time_limit_s,
                                               frozenset(s.uuid for s in fit[1]))
                return Reason.RESOURCES, state.no_gpus + "; next to start (reserved)", state, start
        return state.resources_wait

    def _place(self, job: PendingJob, account: Account, slices: tuple[SliceInfo, ...], equiv: float) -> None:
        self.pool.take(slices)
        account.add(equiv, len(slices), job.interactive)
        end = self.now + job.time_limit_s
        for s in slices:
            self.avail[s.uuid] = end
        self.placements.append(Placement(job.id, tuple(s.uuid for s in slices)))
        if slices:
            self.node_load[slices[0].node] += 1

    def pending_infos(self, priorities: dict[int, float]) -> Mapping[int, PendingInfo]:
        """Why each job waits. Each ``PendingInfo``, and each shape's estimate, is built
        when first read, from the state the pass ended in (which nothing changes after)."""
        if self.reservation is not None:
            hold_reserved(self.avail, self.reservation)
        resolved: dict[int, tuple[float | None, str]] = {}  # id(wait) -> start, detail; waits are shared

        def build(job_id: int, wait: Wait) -> PendingInfo:
            found = resolved.get(id(wait))
            if found is None:
                found = resolved[id(wait)] = self._resolve(wait)
            return PendingInfo(wait[0], priorities[job_id], found[0], found[1])

        return LazyMapping(self.waiting, build)

    def _resolve(self, wait: Wait) -> tuple[float | None, str]:
        """A wait's estimated start and full detail."""
        reason, detail, state, start = wait
        if state is not None:
            if start is None:
                start, hint = self._estimate(state)
            else:  # the reserved job
                hint = self._other_profile_hint(state.shape, start) if state.shape.kind == RequestKind.MIG else ""
            if hint:
                detail = f"{detail}; {hint}"
            if self.fifo_head is not None and start is not None and reason == Reason.PRIORITY:
                floor = self._estimate(self.fifo_head)[0]  # fifo: nobody starts before the blocked head
                start = None if floor is None else max(start, floor)
        if start is not None and not math.isfinite(start):
            start = None
        return start, detail

    def _estimate(self, state: ShapeState) -> tuple[float | None, str]:
        if state.estimate is None:
            fit = earliest_fit(state.shape, state.candidates, self.avail, self.busy)
            start = None if fit is None else fit[0]
            hint = self._other_profile_hint(state.shape, start) if state.shape.kind == RequestKind.MIG else ""
            state.estimate = (start, hint)
        return state.estimate

    def _other_profile_hint(self, shape: Shape, start: float | None) -> str:
        """For a MIG request: another allowed profile that would start sooner."""
        best: tuple[float, int, int, str] | None = None
        any_allowed = Shape(ResourceRequest(), shape.allowed_profiles, shape.allow_full_gpu)
        for s in self.snap.slices:
            when = self.avail.get(s.uuid)
            if when is None or s.profile == shape.request.profile or s.is_full or not any_allowed.accepts(s):
                continue
            cand = (when, s.compute_slices, s.memory_mb, s.profile)
            if best is None or cand < best:
                best = cand
        hints = []
        if best is not None and (start is None or best[0] < start):
            hints.append(f"{best[3]} free now" if best[0] <= self.now
                         else f"{best[3]} would start in {_fmt_wait(best[0] - self.now)}")
        whole = self._whole_gpu_hint(shape, start)
        if whole:
            hints.append(whole)
        return "; ".join(hints)

    def _whole_gpu_hint(self, shape: Shape, start: float | None) -> str:
        """A whole GPU free now while the MIG request waits: its cost in GPU-equivalents."""
        if not shape.allow_full_gpu or (start is not None and start <= self.now):
            return ""
        if not any(s.is_full and self.avail.get(s.uuid, math.inf) <= self.now for s in self.snap.slices):
            return ""
        cost = min((s.gpu_equiv for s in self.snap.slices if shape.accepts(s)), default=0.0)
        return f"a whole GPU is free now: --gpus 1 (1.0 GPU-equivalent instead of {cost:.2f})"


def _fmt_wait(seconds: float) -> str:
    minutes = int(math.ceil(seconds / 60.0))
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def schedule(snapshot: Snapshot) -> CycleResult:
    """Decide which pending jobs start now, on which slices, and why the rest wait."""
    if snapshot.policy not in POLICIES:
        raise ConfigError(f"unknown scheduler policy {snapshot.policy!r} (allowed: {', '.join(POLICIES)})")
    snapshot = without_unavailable_nodes(snapshot)
    priorities, factors = compute_priorities(snapshot)
    state = _Pass(snapshot)
    order = order_pending(snapshot, priorities)
    state.run(order)
    borrowed = borrow_pass(state, order)
    lenders = borrowers(snapshot)
    chosen = reclaim(state, order, lenders)
    pending = state.pending_infos(priorities)
    return CycleResult(tuple(state.placements), pending, priorities, factors, chosen, lenders | borrowed)


def without_unavailable_nodes(snapshot: Snapshot) -> Snapshot:
    """The snapshot with every slice of a DOWN or DRAINED node marked drained."""
    gone = snapshot.unavailable_nodes
    if not gone or not any(s.node in gone and not s.drained for s in snapshot.slices):
        return snapshot
    return replace(snapshot, slices=tuple(replace(s, drained=True) if s.node in gone else s for s in snapshot.slices))
