"""Job priority: a weighted sum of factors, as Slurm's multifactor plugin.

    priority = group + age + fairshare + boost - nice

where, with ``w = snapshot.weights``:

- ``group``     = w.group * group.priority / max(priority of all groups)  (0 if the max is <= 0)
- ``age``       = w.age * min((now - submitted_at) / w.age_cap_s, 1)
- ``fairshare`` = w.fairshare * 2 ** (-usage / (share * w.halflife_s))
  ``usage`` is the user's already-decayed GPU-equivalent seconds and ``share``
  the group's per-member share. A user who kept one whole GPU busy for one
  half-life (decayed sum ~0.72 half-lives) gets 2**-0.72 = 0.61; the factor
  halves for every further ``share * halflife_s`` GPU-seconds.
- ``boost``     = the admin boost, added as it is
- ``nice``      = max(nice, 0), subtracted as it is (nice only lowers)

``factors[job_id]`` holds these five terms (``nice`` as the positive amount
subtracted), so ``priority == group + age + fairshare + boost - nice``.
"""
from __future__ import annotations

import operator
from collections.abc import Mapping
from functools import partial
from itertools import islice

from ds01q.scheduler.snapshot import PendingJob, Snapshot
from ds01q.scheduler.views import LazyMapping

FIFO = "fifo"
PRIORITY = "priority"
BACKFILL = "backfill"
POLICIES = (FIFO, PRIORITY, BACKFILL)


def fairshare_factor(usage: float, share: float, halflife_s: float) -> float:
    """2 ** (-usage / (share * halflife_s)), in (0, 1]; 1.0 for no usage."""
    if usage <= 0:
        return 1.0
    target = share * halflife_s
    if target <= 0:
        return 0.0
    return float(2.0 ** (-usage / target))


class _Terms:
    """The per-pass constants of the priority formula."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        weights = snapshot.weights
        top = max((g.priority for g in snapshot.groups.values()), default=0)
        self.group = {name: weights.group * g.priority / top if top > 0 else 0.0
                      for name, g in snapshot.groups.items()}
        self.age_rate = weights.age / weights.age_cap_s if weights.age_cap_s > 0 else 0.0
        self.age_max = weights.age
        self._fair: dict[str, tuple[str, float]] = {}  # user -> (group, term)
        self._jobs: dict[int, PendingJob] | None = None

    def fairshare(self, user: str, group: str) -> float:
        cached = self._fair.get(user)
        if cached is None or cached[0] != group:
            snap = self.snapshot
            policy = snap.groups.get(group)
            share = policy.share if policy is not None else 1.0
            factor = fairshare_factor(snap.usage.get(user, 0.0), share, snap.weights.halflife_s)
            cached = self._fair[user] = (group, snap.weights.fairshare * factor)
        return cached[1]

    def age(self, job: PendingJob) -> float:
        waited = self.snapshot.now - job.submitted_at
        return 0.0 if waited <= 0 else min(waited * self.age_rate, self.age_max)

    def factors(self, job: PendingJob) -> dict[str, float]:
        return {"group": self.group.get(job.group, 0.0), "age": self.age(job),
                "fairshare": self.fairshare(job.user, job.group), "boost": float(job.boost),
                "nice": float(max(job.nice, 0))}

    def factors_of(self, job_id: int, _priority: float) -> Mapping[str, float]:
        if self._jobs is None:
            self._jobs = {job.id: job for job in self.snapshot.pending}
        return self.factors(self._jobs[job_id])


def compute_priorities(snapshot: Snapshot) -> tuple[dict[int, float], Mapping[int, Mapping[str, float]]]:
    """Priority of every pending job, and its factors (built when read)."""
    terms = _Terms(snapshot)
    now, age_rate, age_max = snapshot.now, terms.age_rate, terms.age_max
    base: dict[str, tuple[str, float]] = {}  # user -> (group, group term + fair-share term)
    priorities: dict[int, float] = {}
    for job in snapshot.pending:
        user_base = base.get(job.user)
        if user_base is None or user_base[0] != job.group:
            term = terms.group.get(job.group, 0.0) + terms.fairshare(job.user, job.group)
            user_base = base[job.user] = (job.group, term)
        waited = now - job.submitted_at
        if waited <= 0:
            age = 0.0
        else:  # min(waited * age_rate, age_max) without the call, NaN included
            age = waited * age_rate
            if age_max < age:
                age = age_max
        nice = job.nice
        priorities[job.id] = user_base[1] + age + job.boost - (nice if nice > 0 else 0)
    return priorities, LazyMapping(priorities, terms.factors_of)


def order_pending(snapshot: Snapshot, priorities: dict[int, float]) -> list[PendingJob]:
    """The order in which a pass considers jobs: by priority, highest first
    (``fifo``: by submit time), ties by submit time, then id.

    Sorting on one float is several times faster than on tuples; the tuple
    sort runs only when two jobs tie on that float.
    """
    jobs = snapshot.pending
    fifo = snapshot.policy == FIFO
    keys = [j.submitted_at for j in jobs] if fifo else [-priorities[j.id] for j in jobs]
    if len(set(keys)) == len(keys):  # no two keys equal: no ties
        # sorted() computes each item's key once, in order: next() hands out keys[i] for jobs[i].
        return sorted(jobs, key=partial(next, iter(keys)))
    order = sorted(range(len(jobs)), key=keys.__getitem__)
    ranked = [keys[i] for i in order]
    if any(map(operator.eq, ranked, islice(ranked, 1, None))):
        if fifo:
            return sorted(jobs, key=lambda j: (j.submitted_at, j.id))
        return sorted(jobs, key=lambda j: (-priorities[j.id], j.submitted_at, j.id))
    return [jobs[i] for i in order]
