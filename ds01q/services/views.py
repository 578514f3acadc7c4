"""Jobs as the JSON objects of the CLI contract (design.md)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from ds01q.models import Job, JobEvent


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def job_dict(job: Job, slices: list[str], events: list[JobEvent] | None, *, private: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "user": job.user,
        "group": job.group,
        "state": job.state,
        "reason": job.reason,
        "reason_detail": job.reason_detail,
        "exit_code": job.exit_code,
        "priority": round(job.priority or 0.0, 3),
        "request": json.loads(job.request),
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
        "held": job.held,
        "node": job.node,
    }
    if private:
        d.update({"workdir": job.workdir, "output": job.output_path, "script_path": job.script_path,
                  "args": json.loads(job.args), "env": json.loads(job.env)})
    if events is not None:
        d["events"] = [{"at": iso(e.at), "state": e.state, "reason": e.reason, "by": e.by} for e in events]
    return d
