"""Slurm's job dependencies (``--dependency``), evaluated for the scheduler's snapshot. Pure.

A job's ``depends_on`` column holds either a list of job ids (afterok on each, the first form) or the
object ``client.slurm_values.parse_dependency`` returns: ``{"mode": "all"|"any", "items": [{"type": T,
"jobs": [{"id": N, "task"?: N, "delay_min"?: N}]} | {"type": "singleton"}]}``.

Each item is ``none`` (satisfied), ``waiting`` or ``never`` (can never be satisfied):

- ``after``: every named job has started (or ended without starting), plus ``delay_min`` minutes;
- ``afterany``: every named job has ended;
- ``afterok`` / ``aftercorr``: every named job COMPLETED; ``never`` once one ended otherwise;
- ``afternotok``: every named job ended other than COMPLETED; ``never`` once one COMPLETED;
- ``singleton``: no earlier job of the same user and name is still queued or running.

A job id that names an array (its first task's id) stands for all of its tasks; ``N_T`` for task T.
A job that does not exist is ``never``. With mode ``all`` the job waits until every item is ``none``
and is ``never`` when one item is; with ``any`` it is ``none`` when one item is and ``never`` when all are.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ds01q.types import FINAL_NAMES, JobState

COMPLETED = JobState.COMPLETED.value
NOT_STARTED = (JobState.PENDING.value, JobState.HELD.value)


@dataclass(frozen=True, slots=True)
class DepJob:
    """What a dependency needs to know of one job."""

    id: int
    state: str
    started_at: float | None = None
    ended_at: float | None = None
    array_id: int | None = None
    array_task_id: int | None = None


def spec_of(depends_on: str | None) -> dict[str, Any] | None:
    """The dependency object of a ``depends_on`` column (a list of ids becomes afterok), or None."""
    raw = json.loads(depends_on or "[]")
    if isinstance(raw, list):
        if not raw:
            return None
        return {"mode": "all", "items": [{"type": "afterok", "jobs": [{"id": int(d)} for d in raw]}]}
    return raw if isinstance(raw, dict) and raw.get("items") else None


def job_ids(spec: dict[str, Any] | None) -> set[int]:
    """The job ids a dependency names (array ids included as written)."""
    if not spec:
        return set()
    return {int(j["id"]) for item in spec["items"] for j in item.get("jobs", ())}


def _one(kind: str, job: DepJob, delay_s: float, now: float) -> str:
    final = job.state in FINAL_NAMES
    if kind == "after":
        if job.state in NOT_STARTED:
            return "waiting"
        since = job.started_at if job.started_at is not None else job.ended_at
        return "none" if since is None or since + delay_s <= now else "waiting"
    if not final:
        return "waiting"
    if kind == "afterany":
        return "none"
    if kind == "afternotok":
        return "never" if job.state == COMPLETED else "none"
    return "none" if job.state == COMPLETED else "never"  # afterok, aftercorr


def _combine(states: Iterable[str], mode: str) -> str:
    found = list(states)
    if mode == "any":
        if "none" in found:
            return "none"
        return "never" if found and all(s == "never" for s in found) else "waiting"
    if "never" in found:
        return "never"
    return "none" if all(s == "none" for s in found) else "waiting"


def evaluate(spec: dict[str, Any] | None, jobs: Callable[[int, int | None], list[DepJob]], now: float,
             singleton_waits: bool = False) -> str:
    """``none``, ``waiting`` or ``never`` for one pending job. ``jobs(id, task)`` gives the jobs an id stands
    for ([] when none exists); ``singleton_waits`` whether an earlier job of the same user and name is active."""
    if not spec:
        return "none"
    results = []
    for item in spec["items"]:
        kind = item["type"]
        if kind == "singleton":
            results.append("waiting" if singleton_waits else "none")
            continue
        per_job = []
        for ref in item.get("jobs", ()):
            found = jobs(int(ref["id"]), ref.get("task"))
            if not found:
                per_job.append("never")
                continue
            delay_s = 60.0 * int(ref.get("delay_min", 0))
            per_job.append(_combine((_one(kind, j, delay_s, now) for j in found), "all"))
        results.append(_combine(per_job, "all"))
    return _combine(results, spec.get("mode", "all"))


class Lookup:
    """``jobs(id, task)`` over a set of ``DepJob`` rows: a job by id, an array by its id, a task by both."""

    def __init__(self, rows: Iterable[DepJob]) -> None:
        self.by_id: dict[int, DepJob] = {}
        self.tasks: dict[int, list[DepJob]] = {}
        for r in rows:
            self.by_id[r.id] = r
            if r.array_id is not None:
                self.tasks.setdefault(r.array_id, []).append(r)

    def __call__(self, job_id: int, task: int | None) -> list[DepJob]:
        tasks = self.tasks.get(job_id, [])
        if task is not None:
            return [t for t in tasks if t.array_task_id == task]
        if tasks:
            return tasks
        found = self.by_id.get(job_id)
        return [found] if found else []
