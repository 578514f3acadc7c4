"""Unit tests of the pure scheduler: priority, placement, limits, reasons, backfill."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

from ds01q.errors import ConfigError
from ds01q.scheduler import GroupPolicy, Limits, Weights, check_request, fairshare_factor, schedule
from ds01q.scheduler.limits import fmt_duration, fmt_num
from ds01q.types import Reason, SliceInfo
from tests.builders import (
    CPU_ONLY,
    HOUR,
    NOW,
    any_slice,
    default_groups,
    drain,
    gpus,
    make_gpu,
    make_job,
    make_nodes,
    make_running,
    make_slices,
    make_snapshot,
    mig,
)


def placed(result) -> dict[int, tuple[str, ...]]:
    return {p.job_id: p.slices for p in result.placements}


def groups_with(**limits: Limits) -> dict[str, GroupPolicy]:
    groups = default_groups()
    for name, lim in limits.items():
        groups[name] = replace(groups[name], limits=lim)
    return groups


# --- acceptance cases from the issue ---------------------------------------------------------

def test_student_at_gpu_limit_waits_on_user_limit_even_with_a_free_whole_gpu():
    slices = make_slices(["2g.10gb"] * 3, "full")
    running = [make_running(i, [f"MIG-0000-{i}"], user="stu") for i in range(3)]
    groups = groups_with(student=Limits(max_gpus=1.0))
    result = schedule(make_snapshot(slices, [make_job(10, user="stu")], running, groups=groups))
    assert result.placements == ()
    info = result.pending[10]
    assert info.reason == Reason.USER_LIMIT
    assert info.detail == "GPU Limit Reached (0.86/1.0)"


def test_student_at_job_limit_waits_on_user_limit():
    slices = make_slices(["2g.10gb"] * 3, "full")
    running = [make_running(i, [f"MIG-0000-{i}"], user="stu") for i in range(3)]
    result = schedule(make_snapshot(slices, [make_job(10, user="stu")], running))
    assert result.pending[10].reason == Reason.USER_LIMIT
    assert result.pending[10].detail == "Job Limit Reached (3/3)"


@pytest.mark.parametrize("policy", ["priority", "backfill"])
def test_researcher_submitted_later_starts_before_earlier_student(policy):
    slices = make_slices("full")
    jobs = [make_job(1, user="stu", submitted_at=NOW - 500), make_job(2, user="alice", group="researcher")]
    full = schedule(make_snapshot(slices, jobs, [make_running(9, ["GPU-0000"], user="x")], policy=policy))
    assert full.placements == ()
    assert {full.pending[1].reason, full.pending[2].reason} == {Reason.RESOURCES}
    freed = schedule(make_snapshot(slices, jobs, [], policy=policy))
    assert placed(freed) == {2: ("GPU-0000",)}
    assert freed.pending[1].reason == Reason.RESOURCES


# --- priority ---------------------------------------------------------------------------------

def test_priority_is_the_sum_of_its_factors():
    weights = Weights(group=1000, age=100, age_cap_s=10 * HOUR, fairshare=500, halflife_s=HOUR)
    jobs = [make_job(1, user="a", submitted_at=NOW - 5 * HOUR, nice=7, boost=40),
            make_job(2, user="b", group="researcher", submitted_at=NOW - 50 * HOUR)]
    snap = make_snapshot(make_slices(), jobs, usage={"a": 3600.0}, weights=weights)
    result = schedule(snap)
    f1, f2 = result.factors[1], result.factors[2]
    assert f1 == pytest.approx({"group": 1000 * 10 / 30, "age": 50.0, "fairshare": 250.0, "boost": 40.0,
                                "nice": 7.0})
    assert f2 == pytest.approx({"group": 1000 * 20 / 30, "age": 100.0, "fairshare": 500.0, "boost": 0.0,
                                "nice": 0.0})
    for job_id, f in ((1, f1), (2, f2)):
        total = f["group"] + f["age"] + f["fairshare"] + f["boost"] - f["nice"]
        assert result.priorities[job_id] == pytest.approx(total)
        assert result.pending[job_id].priority == result.priorities[job_id]


def test_fairshare_factor_halves_per_share_of_halflife():
    assert fairshare_factor(0.0, 1.0, 100.0) == 1.0
    assert fairshare_factor(100.0, 1.0, 100.0) == pytest.approx(0.5)
    assert fairshare_factor(200.0, 2.0, 100.0) == pytest.approx(0.5)
    assert fairshare_factor(1.0, 0.0, 100.0) == 0.0


def test_heavy_user_yields_to_light_user_in_the_same_group():
    jobs = [make_job(1, user="heavy", submitted_at=NOW - 100), make_job(2, user="light")]
    result = schedule(make_snapshot(make_slices("full"), jobs, usage={"heavy": 1e6}))
    assert placed(result) == {2: ("GPU-0000",)}


def test_negative_nice_does_not_raise_priority():
    jobs = [make_job(1, user="a", nice=-500), make_job(2, user="b")]
    result = schedule(make_snapshot(make_slices(), jobs))
    assert result.priorities[1] == pytest.approx(result.priorities[2])


def test_fifo_orders_by_submit_time_and_is_strict():
    slices = make_slices(["3g.20gb", "2g.10gb"])
    jobs = [make_job(1, user="stu", request=mig("3g.20gb"), submitted_at=NOW - 300),
            make_job(2, user="alice", group="researcher", request=mig("3g.20gb"), submitted_at=NOW - 200),
            make_job(3, user="bob", request=mig("2g.10gb"), submitted_at=NOW - 100),
            make_job(4, user="carl", request=CPU_ONLY, submitted_at=NOW - 50)]
    result = schedule(make_snapshot(slices, jobs, policy="fifo"))
    assert placed(result) == {1: ("MIG-0000-0",), 4: ()}
    assert result.pending[2].reason == Reason.RESOURCES
    assert result.pending[3].reason == Reason.PRIORITY
    assert "behind job 2" in result.pending[3].detail
    # Job 1 holds the only 3g slice for an hour; nobody behind job 2 is estimated before it.
    assert result.pending[2].estimated_start == NOW + HOUR
    assert result.pending[3].estimated_start == NOW + HOUR


def test_unknown_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="policy"):
        schedule(make_snapshot(make_slices(), [make_job(1)], policy="lottery"))


# --- placement --------------------------------------------------------------------------------

def test_any_picks_the_smallest_slice_on_an_already_busy_gpu():
    slices = make_slices(["3g.20gb", "1g.5gb"], ["3g.20gb", "1g.5gb", "1g.5gb"], "full")
    running = [make_running(9, ["MIG-0001-1"], user="x")]
    result = schedule(make_snapshot(slices, [make_job(1)], running))
    assert placed(result) == {1: ("MIG-0001-2",)}


def test_any_honours_min_memory_and_keeps_whole_gpus_free():
    slices = make_slices(["1g.5gb", "2g.10gb"], "full")
    result = schedule(make_snapshot(slices, [make_job(1, request=any_slice(8000))]))
    assert placed(result) == {1: ("MIG-0000-1",)}


def test_mig_request_takes_only_its_profile():
    slices = make_slices(["1g.5gb", "3g.20gb"], ["3g.20gb"])
    jobs = [make_job(1, user="a", request=mig("3g.20gb")), make_job(2, user="b", request=mig("3g.20gb")),
            make_job(3, user="c", request=mig("3g.20gb"))]
    result = schedule(make_snapshot(slices, jobs))
    assert sorted(placed(result).values()) == [("MIG-0000-1",), ("MIG-0001-0",)]
    assert result.pending[3].reason == Reason.RESOURCES


def test_gpus_n_go_on_one_node_preferring_the_tightest_fit():
    slices = make_nodes(1, 4) + tuple(make_gpu(10, "full", node="n1") + make_gpu(11, "full", node="n1"))
    jobs = [make_job(1, user="root", group="admin", request=gpus(2))]
    result = schedule(make_snapshot(slices, jobs))
    assert placed(result) == {1: ("GPU-0010", "GPU-0011")}


def test_gpus_n_never_split_across_nodes():
    slices = make_nodes(2, 2)
    running = [make_running(9, ["GPU-0000"], user="x", group="admin"), make_running(8, ["GPU-0002"], user="x",
                                                                                    group="admin")]
    result = schedule(make_snapshot(slices, [make_job(1, user="root", group="admin", request=gpus(2))], running))
    assert result.placements == ()
    assert result.pending[1].reason == Reason.RESOURCES


def test_cpu_only_job_gets_no_slice_but_counts_as_a_running_job():
    running = [make_running(i, [], user="stu") for i in range(3)]
    jobs = [make_job(1, user="stu", request=CPU_ONLY), make_job(2, user="other", request=CPU_ONLY)]
    result = schedule(make_snapshot(make_slices(), jobs, running))
    assert placed(result) == {2: ()}
    assert result.pending[1].reason == Reason.USER_LIMIT


def test_no_slice_is_given_twice_and_busy_or_drained_slices_are_never_given():
    slices = drain(make_slices(["1g.5gb"] * 7), "MIG-0000-6")
    running = [make_running(9, ["MIG-0000-0", "MIG-0000-1"], user="x", group="admin")]
    jobs = [make_job(i, user=f"u{i}") for i in range(10)]
    result = schedule(make_snapshot(slices, jobs, running))
    given = [u for p in result.placements for u in p.slices]
    assert sorted(given) == [f"MIG-0000-{k}" for k in range(2, 6)]
    assert len(result.pending) == 6


def test_free_slice_bigger_than_the_smallest_candidate_can_break_max_gpus():
    slices = make_slices(["2g.10gb", "2g.10gb", "1g.5gb"], "full")
    running = [make_running(1, ["MIG-0000-0"], user="s"), make_running(2, ["MIG-0000-1"], user="s"),
               make_running(3, ["MIG-0000-2"], user="x")]
    groups = groups_with(student=Limits(max_gpus=1.0))
    result = schedule(make_snapshot(slices, [make_job(10, user="s"), make_job(11, user="t")], running,
                                    groups=groups))
    assert result.pending[10].reason == Reason.USER_LIMIT
    assert result.pending[10].detail == "GPU Limit Reached (0.57/1.0)"
    assert placed(result) == {11: ("GPU-0001",)}


def test_smaller_gpu_share_is_used_when_best_fit_would_break_max_gpus():
    a30 = SliceInfo("MIG-A30", "GPU-A30", "1g.6gb", 1, 4, 5888)  # 0.25 of its GPU, least memory
    a100 = SliceInfo("MIG-A100", "GPU-A100", "1g.10gb", 1, 7, 9728)  # 1/7 of its GPU
    busy = SliceInfo("MIG-BUSY", "GPU-A100", "4g.40gb", 4, 7, 40192)
    groups = groups_with(student=Limits(max_gpus=0.8))
    result = schedule(make_snapshot((a30, a100, busy), [make_job(1, user="s")],
                                    [make_running(9, ["MIG-BUSY"], user="s")], groups=groups))
    assert placed(result) == {1: ("MIG-A100",)}


# --- reasons ----------------------------------------------------------------------------------

def test_held_dependency_and_begin_time_reasons():
    jobs = [make_job(1, held=True), make_job(2, dependency="waiting"), make_job(3, dependency="never"),
            make_job(4, eligible_at=NOW + 600)]
    result = schedule(make_snapshot(make_slices("full"), jobs))
    reasons = {i: result.pending[i].reason for i in range(1, 5)}
    assert reasons == {1: Reason.HELD, 2: Reason.DEPENDENCY, 3: Reason.DEPENDENCY_NEVER_SATISFIED,
                       4: Reason.PRIORITY}
    assert result.pending[4].detail == "BeginTime"
    assert result.pending[4].estimated_start == NOW + 600
    assert result.placements == ()


def test_never_fits_and_draining():
    slices = drain(make_slices(["3g.20gb", "2g.10gb"], "full"), "MIG-0000-0")
    jobs = [make_job(1, user="a", request=mig("1g.5gb")), make_job(2, user="b", request=mig("3g.20gb")),
            make_job(3, user="root", group="admin", request=gpus(3))]
    result = schedule(make_snapshot(slices, jobs))
    assert result.pending[1].reason == Reason.NEVER_FITS
    assert result.pending[2].reason == Reason.DRAINING
    assert result.pending[3].reason == Reason.NEVER_FITS
    assert result.placements == ()


def test_resources_estimate_is_when_the_running_job_ends():
    running = [make_running(9, ["GPU-0000"], user="x", started_at=NOW - 600, time_limit_s=HOUR)]
    result = schedule(make_snapshot(make_slices("full"), [make_job(1)], running))
    assert result.pending[1].reason == Reason.RESOURCES
    assert result.pending[1].estimated_start == NOW - 600 + HOUR


def test_mig_request_is_told_another_profile_is_free_now():
    slices = make_slices(["3g.20gb", "2g.10gb"])
    running = [make_running(9, ["MIG-0000-0"], user="x")]
    result = schedule(make_snapshot(slices, [make_job(1, request=mig("3g.20gb"))], running))
    assert result.pending[1].reason == Reason.RESOURCES
    assert "2g.10gb free now" in result.pending[1].detail


# --- limits -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "limits, request_, time_limit, words",
    [
        pytest.param(Limits(allowed_profiles=frozenset({"1g.5gb"})), mig("3g.20gb"), HOUR, "allowed_profiles",
                     id="profile-not-allowed"),
        pytest.param(Limits(allow_full_gpu=False), gpus(1), HOUR, "allow_full_gpu", id="no-full-gpu"),
        pytest.param(Limits(max_slices_per_job=1), gpus(2), HOUR, "max_slices_per_job", id="slices-per-job"),
        pytest.param(Limits(max_gpus=1.0), gpus(2), HOUR, "max_gpus", id="too-many-gpus"),
        pytest.param(Limits(max_runtime_s=24 * HOUR), any_slice(), 48 * HOUR,
                     "--time 48h exceeds max_runtime 24h of group student", id="too-long"),
    ],
)
def test_hard_limits_leave_a_job_at_user_limit(limits, request_, time_limit, words):
    slices = make_slices(["3g.20gb", "1g.5gb"], "full", "full")
    job = make_job(1, user="s", request=request_, time_limit_s=time_limit)
    result = schedule(make_snapshot(slices, [job], groups=groups_with(student=limits)))
    assert result.placements == ()
    assert result.pending[1].reason == Reason.USER_LIMIT
    assert words in result.pending[1].detail


def test_any_request_only_takes_allowed_profiles():
    slices = make_slices(["1g.5gb", "3g.20gb"], "full")
    limits = Limits(allowed_profiles=frozenset({"3g.20gb"}), allow_full_gpu=False)
    jobs = [make_job(1, user="s"), make_job(2, user="t")]
    result = schedule(make_snapshot(slices, jobs, groups=groups_with(student=limits)))
    assert placed(result) == {1: ("MIG-0000-1",)}
    assert result.pending[2].reason == Reason.RESOURCES


def test_interactive_and_slice_limits():
    limits = Limits(max_interactive=1, max_slices=2)
    running = [make_running(9, ["MIG-0000-0"], user="s", interactive=True)]
    jobs = [make_job(1, user="s", interactive=True, submitted_at=NOW - 900), make_job(2, user="s"),
            make_job(3, user="s")]
    result = schedule(make_snapshot(make_slices(["1g.5gb"] * 7), jobs, running, groups=groups_with(student=limits)))
    assert result.pending[1].detail == "Interactive Limit Reached (1/1)"
    assert len(result.placements) == 1
    assert result.pending[3 if 2 in placed(result) else 2].detail == "Slice Limit Reached (2/2)"


def test_user_override_replaces_group_limits():
    running = [make_running(9, ["GPU-0000"], user="vip")]
    jobs = [make_job(1, user="vip")]
    snap = make_snapshot(make_slices("full", "full"), jobs, running, user_limits={"vip": Limits(max_gpus=4.0)})
    assert placed(schedule(snap)) == {1: ("GPU-0001",)}


def test_group_cap_gives_group_limit():
    groups = default_groups()
    groups["student"] = replace(groups["student"], group_max_gpus=1.0, limits=Limits())
    running = [make_running(9, ["GPU-0000"], user="other")]
    result = schedule(make_snapshot(make_slices("full", "full"), [make_job(1, user="s")], running, groups=groups))
    assert result.pending[1].reason == Reason.GROUP_LIMIT
    assert result.pending[1].detail == "Group GPU Limit Reached (1.0/1.0)"


def test_limit_blocked_job_does_not_block_lower_priority_users():
    running = [make_running(i, [f"GPU-000{i}"], user="alice", group="researcher") for i in range(2)]
    jobs = [make_job(1, user="alice", group="researcher"), make_job(2, user="stu", request=gpus(1))]
    for policy in ("fifo", "priority", "backfill"):
        result = schedule(make_snapshot(make_slices("full", "full", "full"), jobs, running, policy=policy))
        assert placed(result) == {2: ("GPU-0002",)}, policy
        assert result.pending[1].reason == Reason.USER_LIMIT


# --- backfill ---------------------------------------------------------------------------------

def backfill_case(short_s: float, policy: str = "backfill"):
    """Node n0: 2 GPUs, one busy for 1h more. A 2-GPU job waits; a 1-GPU job could use the free one."""
    slices = make_nodes(1, 2)
    running = [make_running(9, ["GPU-0000"], user="x", group="admin", started_at=NOW, time_limit_s=HOUR)]
    jobs = [make_job(1, user="root", group="admin", request=gpus(2), time_limit_s=2 * HOUR),
            make_job(2, user="s", request=gpus(1), time_limit_s=short_s)]
    return schedule(make_snapshot(slices, jobs, running, policy=policy))


def test_short_job_backfills_without_delaying_the_reservation():
    result = backfill_case(short_s=HOUR)
    assert placed(result) == {2: ("GPU-0001",)}
    assert result.pending[1].reason == Reason.RESOURCES
    assert result.pending[1].estimated_start == NOW + HOUR
    assert "reserved" in result.pending[1].detail


def test_long_job_waits_behind_the_reservation():
    result = backfill_case(short_s=HOUR + 1)
    assert result.placements == ()
    assert result.pending[2].reason == Reason.PRIORITY
    assert "reserved job 1" in result.pending[2].detail
    assert result.pending[1].estimated_start == NOW + HOUR
    assert result.pending[2].estimated_start == NOW + 3 * HOUR


def test_priority_policy_has_no_reservation():
    result = backfill_case(short_s=10 * HOUR, policy="priority")
    assert placed(result) == {2: ("GPU-0001",)}


def test_long_job_may_use_slices_the_reservation_does_not_need():
    slices = make_nodes(2, 2)
    running = [make_running(9, ["GPU-0000"], user="x", group="admin", time_limit_s=HOUR, started_at=NOW),
               make_running(8, ["GPU-0002"], user="x", group="admin", time_limit_s=2 * HOUR, started_at=NOW)]
    jobs = [make_job(1, user="root", group="admin", request=gpus(2)),
            make_job(2, user="s", request=gpus(1), time_limit_s=10 * HOUR)]
    result = schedule(make_snapshot(slices, jobs, running))
    assert placed(result) == {2: ("GPU-0003",)}
    assert result.pending[1].estimated_start == NOW + HOUR


# --- check_request ----------------------------------------------------------------------------

SLICES = make_slices(["3g.20gb", "2g.10gb", "2g.10gb"], "full")
POSSIBLE = frozenset({"1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"})


@pytest.mark.parametrize(
    "limits, request_, time_limit, expected",
    [
        pytest.param(Limits(max_runtime_s=24 * HOUR), any_slice(), 48 * HOUR,
                     "--time 48h exceeds max_runtime 24h of group student", id="time"),
        pytest.param(Limits(allowed_profiles=frozenset({"2g.10gb"})), mig("3g.20gb"), HOUR,
                     "--mig 3g.20gb is not in allowed_profiles [2g.10gb] of group student", id="profile"),
        pytest.param(Limits(allow_full_gpu=False), gpus(1), HOUR,
                     "--gpus 1: whole GPUs are refused by allow_full_gpu false of group student", id="full"),
        pytest.param(Limits(max_gpus=1.0), gpus(2), HOUR,
                     "--gpus 2 (2.0 GPU-equivalents) exceeds max_gpus 1.0 of group student", id="gpus"),
        pytest.param(Limits(max_slices_per_job=1), gpus(2), HOUR,
                     "--gpus 2 exceeds max_slices_per_job 1 of group student", id="per-job"),
        pytest.param(Limits(), mig("5g.40gb"), HOUR, "MIG profile 5g.40gb is not offered by any GPU here "
                     "(profiles: 1g.5gb, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb, full)", id="impossible"),
        pytest.param(Limits(), gpus(3), HOUR, "--gpus 3: no node has that many GPUs (largest: 2)", id="node"),
        pytest.param(Limits(), any_slice(100_000), HOUR, "--gpu-mem 100000m: no slice here has that much memory",
                     id="memory"),
        pytest.param(Limits(allowed_profiles=frozenset(), allow_full_gpu=False), any_slice(), HOUR,
                     "no slice here is allowed in allowed_profiles [] without whole GPUs (allow_full_gpu false)",
                     id="nothing-allowed"),
    ],
)
def test_check_request_refuses_what_can_never_run(limits, request_, time_limit, expected):
    message = check_request(request_, limits, SLICES, POSSIBLE, time_limit, group="student")
    assert message == expected


@pytest.mark.parametrize("request_", [mig("4g.20gb"), mig("3g.20gb"), any_slice(), gpus(1), CPU_ONLY],
                         ids=["possible-profile", "current-profile", "any", "one-gpu", "cpu"])
def test_check_request_accepts_what_could_run(request_):
    limits = Limits(max_gpus=1.0, max_runtime_s=24 * HOUR, max_slices_per_job=1)
    assert check_request(request_, limits, SLICES, POSSIBLE, HOUR, group="student") is None


def test_number_words():
    assert [fmt_num(x) for x in (6 / 7, 1, 0.5, 2.25)] == ["0.86", "1.0", "0.5", "2.25"]
    assert [fmt_duration(x) for x in (48 * HOUR, 1800, 90)] == ["48h", "30m", "90s"]


# --- determinism ------------------------------------------------------------------------------

def test_same_snapshot_in_any_pending_order_gives_the_same_result():
    slices = make_slices(["2g.10gb"] * 3, ["1g.5gb"] * 7, "full", "full")
    rng = random.Random(3)
    shapes = [any_slice(), mig("2g.10gb"), gpus(1), gpus(2), CPU_ONLY, mig("1g.5gb")]
    jobs = [make_job(i, user=f"u{i % 5}", group=("student", "researcher")[i % 2], request=rng.choice(shapes),
                     submitted_at=NOW - rng.choice((10, 20, 30)), time_limit_s=rng.choice((HOUR, 2 * HOUR)))
            for i in range(40)]
    first = schedule(make_snapshot(slices, jobs))
    rng.shuffle(jobs)
    second = schedule(make_snapshot(slices, jobs))
    assert first == second
    assert first.placements == second.placements
    assert set(first.pending) | set(placed(first)) == {j.id for j in jobs}


def test_result_mappings_behave_like_dicts():
    result = schedule(make_snapshot(make_slices("full"), [make_job(1), make_job(2, user="x"), make_job(3, held=True)]))
    assert len(result.pending) == 2 and set(result.pending) == {2, 3} and 1 not in result.pending
    with pytest.raises(KeyError):
        result.pending[1]
    assert dict(result.pending)[3].reason == Reason.HELD
    assert set(result.factors) == {1, 2, 3} and len(result.factors) == 3
    assert result.pending[2] is result.pending[2]
