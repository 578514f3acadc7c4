"""Jobs as the JSON objects of the CLI contract (design.md)."""
from __future__ import annotations

import functools
import json
from typing import Any

from ds01q.db.models import Job, JobEvent
from ds01q.services.validate import printable
from ds01q.units import iso


@functools.lru_cache(maxsize=4096)
def _json(text: str) -> Any:
    """A JSON column decoded; cached, as array tasks share the same text (a view is serialised, never changed)."""
    return json.loads(text)


def _dependencies(depends_on: str | None) -> dict[str, Any] | None:
    raw = _json(depends_on or "[]")
    if isinstance(raw, list):  # the first form: afterok on each id
        return {"mode": "all", "items": [{"type": "afterok", "jobs": [{"id": i} for i in raw]}]} if raw else None
    return raw or None


def job_dict(job: Job, slices: list[str], events: list[JobEvent] | None, *, private: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "user": job.user,
        "group": job.group,
        "state": job.state,
        "reason": job.reason.value if job.reason else job.end_reason,
        "reason_detail": job.reason_detail,
        "end_reason": job.end_reason,
        "stop_outcome": job.stop_outcome.value if job.stop_outcome else None,
        "exit_code": job.exit_code,
        "priority": round(job.priority or 0.0, 3),
        "request": _json(job.request),
        "slices": slices,
        "interactive": job.interactive,
        "cpus": job.cpus,
        "mem_bytes": job.mem_bytes,
        "time_limit_s": job.time_limit_s,
        "image": job.image,
        "nice": job.nice,
        "boost": job.boost,
        "submitted_at": iso(job.submitted_at),
        "started_at": iso(job.started_at),
        "ended_at": iso(job.ended_at),
        "estimated_start": iso(job.estimated_start),
        "requeue_count": job.requeue_count,
        "held": job.state == "HELD",
        "node": job.node,
        "array_job_id": job.array_id,
        "array_task_id": job.array_task_id,
        "dependencies": _dependencies(job.depends_on),
        "eligible_at": iso(job.eligible_at) if job.eligible_at else None,
    }
    d = {k: printable(v) for k, v in d.items()}  # no terminal escapes into another user's terminal
    if private:
        d.update({"workdir": job.workdir, "output": job.output_path, "error": job.error_path,
                  "script_path": job.script_path,
                  "args": _json(job.args), "env": _json(job.env)})
    if events is not None:
        d["events"] = [{"at": iso(e.at), "state": e.state, "reason": printable(e.reason), "by": printable(e.by)}
                       for e in events]
    return d
