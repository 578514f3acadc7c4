"""``ds01q queue`` with 30,000 pending jobs (three arrays of 10,000 through the batch API) through a real daemon:
the whole queue is far above one protocol line (4 MiB), so the client asks for it in pages by job id."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ds01q.client.api import Client
from ds01q.protocol import MAX_LINE
from tests.support import process_daemon

TASKS = 10_000


def test_queue_of_30000_pending_jobs() -> None:
    with process_daemon("ds01q-bigq-") as d:
        root = d.root
        script = str(root / "task.sh")
        Path(script).write_text("#!/bin/sh\necho $SLURM_ARRAY_TASK_ID\n")
        firsts = []
        with Client(d.socket, timeout=600) as c:
            for _ in range(3):  # held (pending, reason JobHeldUser): the controller leaves them be
                firsts.append(c.submit(script, workdir=str(root), array=f"0-{TASKS - 1}", hold=True,
                                       gpus=0))
            jobs = c.queue()
        assert len(jobs) == 3 * TASKS and {j["state"] for j in jobs} == {"HELD"}
        assert len({j["id"] for j in jobs}) == 3 * TASKS
        assert len(json.dumps(jobs)) > MAX_LINE  # one reply line could not have carried it
        assert [j["id"] for j in jobs] == sorted(j["id"] for j in jobs)  # equal priorities: by id
        cli = [sys.executable, "-m", "ds01q.cli.main", "--config", str(d.config_path)]
        r = subprocess.run([*cli, "queue"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 1 + 3 * TASKS and lines[1].split()[0] == f"{firsts[0]}_0"
        assert lines[-1].split()[0] == f"{firsts[2]}_{TASKS - 1}" and "(Held)" in lines[-1]
