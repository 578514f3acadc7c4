"""Trace replay through the real scheduler, on tiny hand-made traces and a slice of a real one."""
from __future__ import annotations

import os

import pytest

from ds01q.tools.simulate import jain_index, load_trace, simulate, time_limits

REAL_TRACE = "/work/shared/traces/elasticflow-itp/cluster05.csv"


def write_trace(tmp_path, rows: list[tuple[int, int, int]]) -> str:
    path = tmp_path / "trace.csv"
    lines = ["job_id,submission_time,duration,num_gpu"]
    lines += [f"job-{k},{submit},{duration},{gpus}" for k, (submit, duration, gpus) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# A: 1 GPU for 100 s; B: both GPUs for 10 s; C: 1 GPU for 50 s, short enough to backfill before B.
HEAD_OF_LINE = [(0, 100, 1), (1, 10, 2), (2, 50, 1)]


def test_fifo_is_strict_and_backfill_fills_the_gap(tmp_path):
    trace = write_trace(tmp_path, HEAD_OF_LINE)
    fifo = simulate(trace, gpus=2, policy="fifo", users=1)
    backfill = simulate(trace, gpus=2, policy="backfill", users=1)
    # fifo: A at 0, B at 100, C behind B at 110; backfill: C at 2, B still at 100.
    assert fifo["mean_wait_s"] == pytest.approx((0 + 99 + 108) / 3)
    assert backfill["mean_wait_s"] == pytest.approx((0 + 99 + 0) / 3)
    assert fifo["makespan_s"] == 160
    assert backfill["makespan_s"] == 110
    assert backfill["utilization"] == pytest.approx((100 + 20 + 50) / (2 * 110))
    assert fifo["p99_wait_s"] == 108
    assert fifo["jobs"] == backfill["jobs"] == 3


def test_long_job_waits_under_backfill_but_jumps_ahead_under_priority(tmp_path):
    trace = write_trace(tmp_path, [(0, 100, 1), (1, 10, 2), (2, 200, 1)])
    backfill = simulate(trace, gpus=2, policy="backfill", users=1)
    greedy = simulate(trace, gpus=2, policy="priority", users=1)
    # backfill: C would end after B's reservation at 100, so B runs 100-110 and C starts at 110.
    assert backfill["mean_wait_s"] == pytest.approx((0 + 99 + 108) / 3)
    # priority: C takes the free GPU at 2 and B waits until C ends at 202.
    assert greedy["mean_wait_s"] == pytest.approx((0 + 201 + 0) / 3)


def test_jobs_larger_than_a_node_are_clamped_to_one_node(tmp_path):
    trace = write_trace(tmp_path, [(0, 100, 16), (0, 100, 1)])
    result = simulate(trace, gpus=8, policy="backfill", users=2)
    assert result["clamped_jobs"] == 1
    assert result["makespan_s"] == 200
    assert result["jobs"] == 2


def test_user_estimates_are_seeded_and_never_below_the_duration(tmp_path):
    jobs = load_trace(write_trace(tmp_path, [(k, 100 + k, 1) for k in range(50)]), 8)
    first, again, other = (time_limits(jobs, "user", seed) for seed in (1, 1, 2))
    assert first == again and first != other
    assert all(j.duration <= first[j.id] <= 5 * j.duration for j in jobs)


def test_jain_index():
    assert jain_index([2.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)


@pytest.mark.parametrize("kwargs", [{"gpus": 0}, {"policy": "lottery"}, {"estimate": "3x"}, {"users": 0}])
def test_bad_arguments_are_refused(tmp_path, kwargs):
    args = {"gpus": 2, "policy": "fifo", "users": 1, "estimate": "exact"} | kwargs
    with pytest.raises(ValueError):
        simulate(write_trace(tmp_path, HEAD_OF_LINE), **args)


@pytest.mark.skipif(not os.path.exists(REAL_TRACE), reason="shared trace not present")
@pytest.mark.parametrize("policy", ["fifo", "priority", "backfill"])
def test_replays_a_slice_of_a_real_trace(policy):
    result = simulate(REAL_TRACE, gpus=4, policy=policy, users=8, estimate="user", max_jobs=300)
    assert result["jobs"] == 300
    assert 0 <= result["p50_wait_s"] <= result["p99_wait_s"]
    assert 0 < result["utilization"] <= 1
    assert 1 / 8 <= result["jain_fairness"] <= 1
    assert result == simulate(REAL_TRACE, gpus=4, policy=policy, users=8, estimate="user", max_jobs=300)
