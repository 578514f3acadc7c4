"""The pure scheduler and Slurm's options: an array's %throttle (Snapshot.array_throttle) and typed GPU
requests (ResourceRequest.gpu_model matched against the slices' GPU names)."""
from __future__ import annotations

from dataclasses import replace

from ds01q.controller.dependencies import DepJob, Lookup, evaluate
from ds01q.scheduler import schedule
from ds01q.types import Reason, RequestKind, ResourceRequest
from tests.builders import CPU_ONLY, NOW, make_job, make_running, make_slices, make_snapshot


def test_throttle_counts_running_tasks_and_this_passes_placements():
    jobs = [make_job(i, user="root", group="admin", request=CPU_ONLY, array_id=10) for i in range(10, 16)]
    running = [make_running(9, [], user="root", group="admin", array_id=10)]
    result = schedule(make_snapshot(make_slices("full"), jobs, running, array_throttle={10: 3}))
    assert [p.job_id for p in result.placements] == [10, 11]
    assert {result.pending[i].reason for i in range(12, 16)} == {Reason.ARRAY_TASK_LIMIT}
    unthrottled = schedule(make_snapshot(make_slices("full"), jobs, running))
    assert len(unthrottled.placements) == 6


def test_throttle_is_per_array():
    jobs = [make_job(1, request=CPU_ONLY, array_id=1), make_job(2, request=CPU_ONLY, array_id=1),
            make_job(3, request=CPU_ONLY, array_id=3), make_job(4, request=CPU_ONLY, array_id=3)]
    result = schedule(make_snapshot(make_slices("full"), jobs, array_throttle={1: 1, 3: 2}))
    assert sorted(p.job_id for p in result.placements) == [1, 3, 4]
    assert result.pending[2].reason == Reason.ARRAY_TASK_LIMIT


def test_a_gpu_model_takes_only_gpus_of_that_name():
    slices = make_slices("full", "full")
    slices = (replace(slices[0], gpu_name="NVIDIA TITAN RTX"), replace(slices[1], gpu_name="NVIDIA H100 80GB HBM3"))
    want = {"h100": "GPU-0001", "titan-rtx": "GPU-0000", "TitanRTX": "GPU-0000"}
    for model, uuid in want.items():
        req = ResourceRequest(RequestKind.GPUS, count=1, gpu_model=model)
        result = schedule(make_snapshot(slices, [make_job(1, user="root", group="admin", request=req)]))
        assert [p.slices for p in result.placements] == [(uuid,)], model
    req = ResourceRequest(RequestKind.GPUS, count=1, gpu_model="a100")
    result = schedule(make_snapshot(slices, [make_job(1, user="root", group="admin", request=req)]))
    assert result.placements == () and result.pending[1].reason == Reason.NEVER_FITS


def test_request_round_trips_with_and_without_a_model():
    plain = ResourceRequest(RequestKind.GPUS, count=2)
    assert "gpu_model" not in plain.to_dict() and ResourceRequest.from_dict(plain.to_dict()) == plain
    typed = replace(plain, gpu_model="a100")
    assert ResourceRequest.from_dict(typed.to_dict()) == typed


def test_dependency_evaluation():
    rows = [DepJob(1, "COMPLETED", NOW - 60, NOW), DepJob(2, "FAILED", NOW - 60, NOW), DepJob(3, "RUNNING", NOW - 30),
            DepJob(4, "PENDING"), DepJob(5, "COMPLETED", array_id=5, array_task_id=0),
            DepJob(6, "RUNNING", array_id=5, array_task_id=1)]
    look = Lookup(rows)

    def ev(text_items, mode="all"):
        return evaluate({"mode": mode, "items": text_items}, look, NOW)

    def item(kind, *ids, **extra):
        return {"type": kind, "jobs": [{"id": i, **extra} for i in ids]}

    assert ev([item("afterok", 1)]) == "none"
    assert ev([item("afterok", 1, 2)]) == "never"
    assert ev([item("afternotok", 2)]) == "none" and ev([item("afternotok", 1)]) == "never"
    assert ev([item("afterany", 1, 2)]) == "none" and ev([item("afterany", 3)]) == "waiting"
    assert ev([item("after", 3)]) == "none" and ev([item("after", 4)]) == "waiting"
    assert ev([item("after", 3, delay_min=1)]) == "waiting"
    assert ev([item("afterok", 5)]) == "waiting" and ev([item("afterok", 5, task=0)]) == "none"
    assert ev([item("afterok", 99)]) == "never"
    assert ev([item("afterok", 2), item("afterok", 1)], mode="any") == "none"
    assert ev([item("afterok", 2), item("afterok", 99)], mode="any") == "never"
    assert ev([item("afterok", 2), item("afterok", 4)], mode="any") == "waiting"
    assert evaluate({"mode": "all", "items": [{"type": "singleton"}]}, look, NOW, singleton_waits=True) == "waiting"
    assert evaluate(None, look, NOW) == "none"
