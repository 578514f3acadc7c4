"""What every fault scenario checks afterwards: no job lost or run twice, every job terminal
(or legitimately pending), no slice held without a running job, no container left behind."""
from __future__ import annotations

import collections
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from ds01q.client.api import FINAL, Client
from ds01q.executors.docker import name_prefix
from ds01q.executors.heldmount import DEFAULT_ROOT as HELD_ROOT
from tests.support import Daemon

MARKER_SCRIPT = "#!/bin/sh\necho $DS01Q_JOB_ID >> {marker}\nsleep {sleep}\n"


def runs(marker: Path) -> collections.Counter[int]:
    """How many times each job id started (each run appends its id to the marker file)."""
    text = marker.read_text() if marker.exists() else ""
    return collections.Counter(int(x) for x in text.split())


def wait_all_final(c: Client, ids: list[int], timeout: float) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    jobs: dict[int, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        jobs = {i: c.show(i) for i in ids}
        if all(j["state"] in FINAL for j in jobs.values()):
            return jobs
        time.sleep(0.5)
    raise AssertionError(f"not final after {timeout} s: "
                         f"{[(i, j['state']) for i, j in jobs.items() if j['state'] not in FINAL][:10]}")


def db_file(d: Daemon) -> Path:
    """The daemon's SQLite file (its config's ``database``)."""
    url = yaml.safe_load(d.config_path.read_text())["database"]
    assert url.startswith("sqlite:///"), url
    return Path(url[len("sqlite:///"):])


def check_accounting(d: Daemon, completed: list[int]) -> None:
    """Each completed job has one usage row, charged from its start to its end, share × wall."""
    db = sqlite3.connect(f"file:{db_file(d)}?mode=ro", uri=True, timeout=30)
    try:
        for job_id in completed:
            (started, ended), = db.execute("SELECT started_at, ended_at FROM jobs WHERE id = ?", (job_id,))
            rows = db.execute("SELECT started_at, ended_at, wall_s, gpu_share, gpu_equiv_s FROM job_usage "
                              "WHERE job_id = ?", (job_id,)).fetchall()
            assert len(rows) == 1, f"job {job_id}: {len(rows)} usage rows"
            u_start, u_end, wall, share, equiv = rows[0]
            assert (u_start, u_end) == (started, ended) and abs(wall - (ended - started)) < 1e-6, (job_id, rows)
            assert abs(equiv - share * wall) < 1e-6 and 0 <= wall < 120, (job_id, rows)
    finally:
        db.close()


def ran(job: dict[str, Any]) -> bool:
    return any(e["state"] == "RUNNING" for e in job.get("events", []))


def check_invariants(d: Daemon, c: Client, ids: list[int], marker: Path, timeout: float = 90,
                     answered_cancelled: set[int] = frozenset()) -> dict[int, Any]:  # type: ignore[assignment]
    """``answered_cancelled``: jobs whose cancel was answered CANCELLED (not STOPPING): never run."""
    jobs = wait_all_final(c, ids, timeout)
    counts = runs(marker)
    twice = {i: n for i, n in counts.items() if n > 1}
    assert not twice, f"jobs run twice: {twice}"
    unknown = set(counts) - set(ids)
    assert not unknown, f"runs of jobs nobody submitted: {unknown}"
    for i, j in jobs.items():
        if j["state"] == "COMPLETED":
            assert counts[i] == 1, f"job {i} COMPLETED but ran {counts[i]} times"
        if i in answered_cancelled:
            assert j["state"] == "CANCELLED" and not ran(j) and counts[i] == 0, \
                f"job {i} was answered CANCELLED, yet it ran: {j['state']}, {counts[i]} runs"
    check_accounting(d, [i for i, j in jobs.items() if j["state"] == "COMPLETED"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # slices and containers are released just after the job ends
        st = c.status()
        held = [s for g in st["gpus"] for s in g["slices"] if s["state"] == "busy"]
        if not held and not d.containers():
            break
        time.sleep(0.5)
    assert not held, f"slices held with every job final: {held}"
    assert d.containers() == [], "containers left behind"
    staging = os.path.join(HELD_ROOT, name_prefix(d.instance)) + "/"
    staged = [m for m in (line.split()[1] for line in Path("/proc/mounts").read_text().splitlines())
              if m.startswith(staging)]
    assert staged == [], f"staging mounts of working directories left behind: {staged}"
    return jobs
