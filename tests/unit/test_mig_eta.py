"""mig.eta.recut_eta: how long until a GPU can be re-cut to a target without stopping a job."""
from __future__ import annotations

from ds01q.mig.eta import RECUT_STEP_S, recut_eta
from ds01q.mig.placement import Instance
from ds01q.mig.profiles import MODELS

A100 = MODELS["A100-40GB"]


def cut(*busy: str) -> list[Instance]:
    """3g.20gb at 4, 2g.10gb at 2, 1g.5gb at 0 and 1 (uuids "3g", "2g", "1a", "1b")."""
    insts = [Instance("3g.20gb", 4, 4, 1, "3g"), Instance("2g.10gb", 2, 2, 2, "2g"),
             Instance("1g.5gb", 0, 1, 3, "1a"), Instance("1g.5gb", 1, 1, 4, "1b")]
    return [Instance(i.profile, i.start, i.size, i.gi_id, i.uuid, i.uuid in busy) for i in insts]


def test_only_free_instances_in_the_way_costs_just_the_steps() -> None:
    eta = recut_eta(A100, cut("3g"), ["3g.20gb", "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb"], {"3g": 5000.0}, 100.0)
    assert eta is not None and eta.wait_s == 0 and eta.waits_for == ()
    assert eta.recut_s == RECUT_STEP_S * len(eta.plan.steps) and len(eta.plan.steps) == 3  # -2g, +1g, +1g


def test_a_busy_instance_in_the_way_waits_for_its_job_and_only_that_one() -> None:
    free_at = {"3g": 9000.0, "2g": 4000.0, "1a": 1000.0}
    eta = recut_eta(A100, cut("3g", "2g", "1a"), ["3g.20gb", "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb"], free_at, 100.0)
    assert eta is not None and eta.waits_for == ("2g",) and eta.wait_s == 3900.0  # not the 1g's earlier end
    assert [s.uuid for s in eta.plan.destroys] == ["2g"]


def test_unknown_end_or_no_change_needed() -> None:
    assert recut_eta(A100, cut("2g"), ["7g.40gb"], {}, 0.0) is None  # its job has no known end
    eta = recut_eta(A100, cut(), ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"], {}, 0.0)
    assert eta is not None and eta.plan.steps == () and eta.total_s == 0
