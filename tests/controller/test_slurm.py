"""Slurm's job options through the submit service and the controller (FakeExecutor, fake clock, SQLite and
PostgreSQL): arrays and their throttle, dependencies, --begin, holds, the SLURM_* environment, file-name
patterns, GPU models, job names and the dry run."""
from __future__ import annotations

import os
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from ds01q.db.models import Job, JobEvent
from ds01q.errors import PermissionDenied, RequestError
from ds01q.services import holds, submit
from ds01q.services.context import Caller
from tests.controller.test_controller import ALICE, ROOT, T0, Harness, config_data, db_url, h  # noqa: F401

BOB = Caller(uid=4343, gid=4343, user="bob", admin=False)
CPU = {"gpus": 0}


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def own_dir(h: Harness, caller: Caller) -> str:
    d = h.tmp_path / caller.user
    d.mkdir(exist_ok=True)
    os.chown(d, caller.uid, caller.gid)
    return str(d)


def states(h: Harness, ids: list[int]) -> list[str]:
    return [h.job(i).state for i in ids]


def array_ids(h: Harness, array_id: int) -> list[int]:
    with h.sessions() as s:
        return list(s.scalars(select(Job.id).where(Job.array_id == array_id).order_by(Job.array_task_id)))


# ----------------------------------------------------------------------------- arrays
def test_an_array_of_10_with_throttle_2_never_runs_more_than_2(h: Harness) -> None:
    first = h.submit(array={"indices": list(range(10)), "throttle": 2}, **CPU)
    ids = array_ids(h, first)
    assert len(ids) == 10 and ids[0] == first
    most = 0
    for _ in range(30):
        h.tick()
        running = [i for i in ids if h.job(i).state == "RUNNING"]
        most = max(most, len(running))
        assert len(running) <= 2
        waiting = [h.job(i) for i in ids if h.job(i).state == "PENDING"]
        if running and waiting:
            assert {j.reason.value for j in waiting} == {"JobArrayTaskLimit"}
        for i in running[:1]:
            h.ex.finish(i, exit_code=0)
        if all(s == "COMPLETED" for s in states(h, ids)):
            break
    assert most == 2 and states(h, ids) == ["COMPLETED"] * 10


def test_array_tasks_get_their_index_output_name_and_slurm_env(h: Harness) -> None:
    first = h.submit(array="3,5,7", name="sweep", output="%x-%A_%a.out", error="e-%j.err", cpus=2, mem="1g",
                     mig="2g.10gb")
    ids = array_ids(h, first)
    tasks = [h.job(i) for i in ids]
    assert [t.array_task_id for t in tasks] == [3, 5, 7] and {t.array_id for t in tasks} == {first}
    assert [t.output_path for t in tasks] == [f"{h.tmp_path}/sweep-{first}_{n}.out" for n in (3, 5, 7)]
    assert [t.error_path for t in tasks] == [f"{h.tmp_path}/e-{i}.err" for i in ids]
    h.tick()
    env = h.ex.specs[ids[1]].env
    assert env["SLURM_ARRAY_JOB_ID"] == str(first) and env["SLURM_ARRAY_TASK_ID"] == "5"
    assert env["SLURM_JOB_ID"] == str(ids[1]) and env["SLURM_JOB_NAME"] == "sweep"
    assert env["SLURM_CPUS_PER_TASK"] == "2" and env["SLURM_MEM_PER_NODE"] == "1024"
    assert env["SLURM_JOB_GPUS"] == "0" and env["SLURM_SUBMIT_DIR"] == str(h.tmp_path)


def test_ten_thousand_tasks_in_one_request(h: Harness) -> None:
    r = submit.submit(h.ctx, ROOT, {"script": "#!/bin/sh\ntrue\n", "workdir": str(h.tmp_path),
                                    "array": "0-9999%50", **CPU})
    assert r["array"] == {"job_id": r["id"], "tasks": 10_000, "throttle": 50}
    with h.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.array_id == r["id"])) == 10_000
        assert s.scalar(select(func.count(func.distinct(Job.array_task_id))).where(Job.array_id == r["id"])) == 10_000
        assert s.scalar(select(func.count()).select_from(JobEvent)) == 10_000
        paths = set(s.scalars(select(Job.output_path).where(Job.array_id == r["id"])))
    assert len(paths) == 10_000 and f"{h.tmp_path}/ds01q-{r['id']}_9999.out" in paths


def test_an_array_counts_every_task_against_max_queued_jobs(h: Harness) -> None:
    data = config_data(h.tmp_path)
    data["groups"]["student"]["max_queued_jobs"] = 5
    h.config_path.write_text(yaml.safe_dump(data))
    h.settings.reload()
    wd = own_dir(h, ALICE)
    with pytest.raises(Exception) as e:
        h.submit(ALICE, array="0-5", workdir=wd, **CPU)
    assert "max_queued_jobs" in one_line(e)
    h.submit(ALICE, array="0-4", workdir=wd, **CPU)


@pytest.mark.parametrize("array, error", [
    ({"indices": [1, 1]}, "appears twice"),
    ({"indices": [-1]}, "from 0"),
    ({"indices": []}, "1 to 10000 tasks"),
    ({"indices": [1], "throttle": 0}, "%throttle"),
    ("5-1", "empty range"),
    ([1, 2], "give indices"),
])
def test_bad_arrays_are_one_line_errors(h: Harness, array: Any, error: str) -> None:
    with pytest.raises(RequestError) as e:
        h.submit(array=array)
    assert error in one_line(e)


# ----------------------------------------------------------------------------- dependencies
def test_afterok_on_a_failed_job_never_starts_and_on_a_completed_one_starts(h: Harness) -> None:
    bad, good = h.submit(**CPU), h.submit(**CPU)
    h.tick()
    on_bad = h.submit(dependency=f"afterok:{bad}", **CPU)
    on_good = h.submit(dependency={"mode": "all", "items": [{"type": "afterok", "jobs": [{"id": good}]}]}, **CPU)
    h.tick()
    assert [h.job(i).reason.value for i in (on_bad, on_good)] == ["Dependency", "Dependency"]
    h.ex.finish(bad, exit_code=3)
    h.ex.finish(good, exit_code=0)
    h.tick(2)
    assert (h.job(on_bad).state, h.job(on_bad).reason.value) == ("PENDING", "DependencyNeverSatisfied")
    assert h.job(on_good).state == "RUNNING"


@pytest.mark.parametrize("kind, exit_code, want", [
    ("afternotok", 1, "RUNNING"), ("afternotok", 0, "DependencyNeverSatisfied"),
    ("afterany", 0, "RUNNING"), ("afterany", 9, "RUNNING"),
])
def test_dependency_types(h: Harness, kind: str, exit_code: int, want: str) -> None:
    first = h.submit(**CPU)
    h.tick()
    second = h.submit(dependency=f"{kind}:{first}", **CPU)
    h.tick()
    assert h.job(second).reason.value == "Dependency"
    h.ex.finish(first, exit_code=exit_code)
    h.tick(2)
    job = h.job(second)
    assert (job.state if job.state == "RUNNING" else job.reason.value) == want


def test_after_waits_for_the_start_plus_its_delay(h: Harness) -> None:
    first = h.submit(**CPU, hold=True)
    second = h.submit(dependency=f"after:{first}+2", **CPU)
    h.tick()
    assert h.job(second).reason.value == "Dependency"
    holds.hold(h.ctx, ROOT, {"ids": [first]}, release=True, admin=False)
    h.tick()
    assert h.job(first).state == "RUNNING" and h.job(second).state == "PENDING"
    h.clock.advance(121)
    h.tick()
    assert h.job(second).state == "RUNNING"


def test_singleton_runs_one_job_of_a_name_at_a_time(h: Harness) -> None:
    a = h.submit(name="nightly", dependency="singleton", **CPU)
    b = h.submit(name="nightly", dependency="singleton", **CPU)
    other = h.submit(name="other", dependency="singleton", **CPU)
    h.tick()
    assert states(h, [a, b, other]) == ["RUNNING", "PENDING", "RUNNING"]
    h.ex.finish(a)
    h.tick(2)
    assert states(h, [a, b]) == ["COMPLETED", "RUNNING"]


def test_a_dependency_on_an_array_waits_for_every_task(h: Harness) -> None:
    first = h.submit(array="0-1", **CPU)
    ids = array_ids(h, first)
    task1 = h.submit(dependency=f"afterok:{first}_1", **CPU)
    whole = h.submit(dependency=f"afterok:{first}", **CPU)
    h.tick()
    h.ex.finish(ids[1])
    h.tick(2)
    assert states(h, [task1, whole]) == ["RUNNING", "PENDING"]
    h.ex.finish(ids[0])
    h.tick(2)
    assert h.job(whole).state == "RUNNING"


def test_a_dependency_on_a_missing_job_is_refused(h: Harness) -> None:
    with pytest.raises(RequestError) as e:
        h.submit(dependency="afterok:999999")
    assert "job 999999 does not exist" in one_line(e)
    with pytest.raises(RequestError) as e:
        h.submit(dependency={"mode": "all", "items": [{"type": "before", "jobs": [{"id": 1}]}]})
    assert "not a dependency type" in one_line(e)


# ----------------------------------------------------------------------------- --begin, holds
def test_begin_delays_the_start(h: Harness) -> None:
    job_id = h.submit(begin="now+10minutes", **CPU)
    assert h.job(job_id).eligible_at == T0 + 600
    h.tick()
    assert h.job(job_id).state == "PENDING"
    h.clock.advance(601)
    h.tick()
    assert h.job(job_id).state == "RUNNING"


def test_a_user_releases_their_own_hold_but_not_an_admins(h: Harness) -> None:
    wd = own_dir(h, ALICE)
    mine = h.submit(ALICE, hold=True, workdir=wd, **CPU)
    h.tick()
    assert h.job(mine).state == "HELD"
    with pytest.raises(PermissionDenied):
        holds.hold(h.ctx, BOB, {"ids": [mine]}, release=True, admin=False)
    holds.hold(h.ctx, ALICE, {"ids": [mine]}, release=True, admin=False)
    assert h.job(mine).state == "PENDING"
    held = h.submit(ALICE, **CPU, begin="now+1hour", workdir=wd)
    holds.hold(h.ctx, ROOT, {"ids": [held]}, release=False, admin=True)
    with pytest.raises(PermissionDenied) as e:
        holds.hold(h.ctx, ALICE, {"ids": [held]}, release=True, admin=False)
    assert "only an admin" in one_line(e)
    with pytest.raises(PermissionDenied):
        holds.hold(h.ctx, ALICE, {"ids": [held]}, release=True, admin=True)
    holds.hold(h.ctx, ROOT, {"ids": [held]}, release=True, admin=True)
    assert h.job(held).state == "PENDING" and not h.job(held).held_by_admin


def test_holding_an_array_id_holds_its_tasks(h: Harness) -> None:
    first = h.submit(ALICE, array="0-3", begin="now+1hour", workdir=own_dir(h, ALICE), **CPU)
    out = holds.hold(h.ctx, ALICE, {"ids": [first]}, release=False, admin=False)
    assert len(out) == 4 and set(states(h, array_ids(h, first))) == {"HELD"}


# ----------------------------------------------------------------------------- names, paths, GPUs, dry run
@pytest.mark.parametrize("name", ["my job", "sweep*", "lr=0.1 %", "résumé-β"])
def test_any_printable_job_name(h: Harness, name: str) -> None:
    assert h.job(h.submit(name=name)).name == name


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "\x1b[31m", "", "x" * 201])
def test_control_characters_in_names_are_refused(h: Harness, name: str) -> None:
    with pytest.raises(RequestError) as e:
        h.submit(name=name)
    assert "printable characters" in one_line(e)


def test_output_patterns_and_chdir(h: Harness) -> None:
    sub = h.tmp_path / "runs" / "alpha"
    sub.mkdir(parents=True)
    job_id = h.submit(name="alpha", chdir="runs/%x", output="%u-%j-%%.log")
    job = h.job(job_id)
    assert job.workdir == str(sub) and job.output_path == f"{sub}/root-{job_id}-%.log"
    with pytest.raises(RequestError) as e:
        h.submit(chdir="missing/%j")
    assert "does not exist" in one_line(e)


def test_gpu_model_matches_the_inventory(h: Harness) -> None:
    job = h.job(h.submit(gpus=1, gpu_model="A100"))  # matched without case, on "NVIDIA A100-PCIE-40GB"
    assert job.request == '{"kind": "gpus", "profile": null, "count": 1, "min_mem_mb": 0, "gpu_model": "A100"}'
    with pytest.raises(RequestError) as e:
        h.submit(gpus=1, gpu_model="h100")
    assert "no GPU here is a 'h100'" in one_line(e)
    with pytest.raises(RequestError) as e:
        h.submit(mig="2g.10gb", gpu_model="a100")
    assert "GPU model" in one_line(e)


def test_dry_run_validates_and_queues_nothing(h: Harness) -> None:
    r = submit.submit(h.ctx, ROOT, {"script": "#!/bin/sh\n", "workdir": str(h.tmp_path), "array": "0-9%2",
                                    "name": "dry", "dependency": "afterok:424242", "dry_run": True,
                                    "time": "1:00:00", "mig": "2g.10gb"})
    assert r["id"] is None and r["dry_run"] is True
    assert r["array"]["indices"] == list(range(10)) and r["array"]["throttle"] == 2
    assert r["dependencies"]["items"][0] == {"type": "afterok", "jobs": [{"id": 424242}]}
    assert r["time_limit_s"] == 3600 and r["request"]["profile"] == "2g.10gb" and r["name"] == "dry"
    assert any("job 424242 does not exist" in w for w in r["warnings"])
    with h.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
        assert s.scalar(select(func.count()).select_from(JobEvent)) == 0
    with pytest.raises(RequestError):
        submit.submit(h.ctx, ROOT, {"script": "#!/bin/sh\n", "workdir": str(h.tmp_path), "dry_run": True,
                                    "mig": "9g.99gb"})
