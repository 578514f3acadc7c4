"""Issue 13 through the real daemon and Docker, as an unprivileged user: an unchanged Slurm script with an
array and a throttle, Slurm's environment in the container, %A_%a output names, and a dependency."""
from __future__ import annotations

import json
import time

import pytest

from tests.support import Daemon

pytestmark = pytest.mark.docker

SCRIPT = """#!/bin/sh
#SBATCH --job-name=sweep   # a trailing comment, as in the wild
#SBATCH --array=0-2%1
#SBATCH --output=%x-%A_%a.out
#SBATCH --cpus-per-task=1 --mem=64M
#SBATCH -p gpu
echo task=$SLURM_ARRAY_TASK_ID of=$SLURM_ARRAY_JOB_ID id=$SLURM_JOB_ID name=$SLURM_JOB_NAME
echo cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_NODE gpus=$SLURM_JOB_GPUS dir=$SLURM_SUBMIT_DIR
sleep 1
"""


def test_an_unchanged_slurm_array_runs_one_task_at_a_time(daemon: Daemon) -> None:
    user = "ds01q-stu1"
    path = daemon.script(user, "sweep.sh", SCRIPT)
    r = daemon.cli(user, "submit", str(path))
    assert r.rc == 0 and "(array of 3 tasks)" in r.out and "--partition=gpu ignored" in r.err, r
    first = int(r.out.split()[3])
    ids = [first + i for i in range(3)]
    deadline, most = time.monotonic() + 90, 0
    while time.monotonic() < deadline:
        jobs = {j["id"]: j for j in daemon.cli_json("root", "queue") if j["id"] in ids}
        most = max(most, sum(j["state"] in ("STARTING", "RUNNING") for j in jobs.values()))
        if not jobs:
            break
        time.sleep(0.2)
    assert most == 1
    wd = daemon.workdir(user)
    for task, job_id in enumerate(ids):
        job = daemon.show(job_id)
        assert job["state"] == "COMPLETED" and (job["array_job_id"], job["array_task_id"]) == (first, task)
        text = (wd / f"sweep-{first}_{task}.out").read_text()
        assert f"task={task} of={first} id={job_id} name=sweep" in text
        assert f"cpus=1 mem=64 gpus=0 dir={wd}" in text


def test_afterok_on_a_failed_job_never_runs(daemon: Daemon) -> None:
    user = "ds01q-stu1"
    bad = daemon.submit(user, "#!/bin/sh\nexit 2\n", "--gpus", "0")
    dep = daemon.submit(user, "#!/bin/sh\necho never\n", "--gpus", "0", "--dependency", f"afterok:{bad}")
    daemon.wait_state(bad, "FAILED")
    deadline = time.monotonic() + 20
    job = daemon.show(dep)
    while job["reason"] != "DependencyNeverSatisfied" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = daemon.show(dep)
    assert (job["state"], job["reason"]) == ("PENDING", "DependencyNeverSatisfied")
    r = daemon.cli(user, "cancel", str(dep))
    assert r.rc == 0, r
    assert json.loads(daemon.cli(user, "queue", "--json").out) == []
