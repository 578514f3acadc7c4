"""Job arrays in listings, as squeue shows them: one line per array's pending tasks (``12_[3-99%4]``) unless
expanded; a task is ``ARRAYID_TASK`` (``12_3``)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence


def ranges(indices: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``0-2,5,7-8``."""
    out: list[str] = []
    nums = sorted(set(indices))
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)


def label(job: dict[str, Any]) -> str:
    if job.get("array_job_id") is not None and job.get("array_task_id") is not None:
        return f"{job['array_job_id']}_{job['array_task_id']}"
    return str(job["id"])


def collapse(jobs: Sequence[dict[str, Any]], throttles: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """The listing with each array's PENDING tasks in one row (at the place of the first), labelled
    ``ARRAYID_[ranges]``; running and held tasks keep their own rows. Every row gets a ``label``."""
    pending: dict[int, list[dict[str, Any]]] = {}
    for j in jobs:
        if j.get("array_job_id") is not None and j["state"] == "PENDING":
            pending.setdefault(j["array_job_id"], []).append(j)
    out: list[dict[str, Any]] = []
    done: set[int] = set()
    for j in jobs:
        array = j.get("array_job_id")
        if array is None or j["state"] != "PENDING" or len(pending[array]) == 1:
            out.append({**j, "label": label(j)})
            continue
        if array in done:
            continue
        done.add(array)
        tasks = pending[array]
        throttle = (throttles or {}).get(array)
        spec = ranges(t["array_task_id"] for t in tasks) + (f"%{throttle}" if throttle else "")
        out.append({**j, "label": f"{array}_[{spec}]", "tasks": len(tasks)})
    return out
