"""Placement-aware re-cut planning (ds01q.mig.placement): legal placements, the driver's
placement rule, and plans that never destroy a busy instance."""
from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from ds01q.mig.placement import (
    Instance,
    apply_steps,
    creation_order,
    driver_start,
    legal_placements,
    plan_recut,
)
from ds01q.mig.profiles import MODELS, valid_layouts

A100 = MODELS["A100-40GB"]


def cut(model, layout, busy=()):  # type: ignore[no-untyped-def]
    """Instances as the driver creates ``layout`` largest first; ``busy``: indices (in creation order)."""
    made = creation_order(model, [], layout)
    assert made is not None, layout
    return [Instance(i.profile, i.start, i.size, gi_id=n + 1, uuid=f"MIG-{n}", busy=n in busy)
            for n, i in enumerate(made)]


def test_legal_placements_follow_the_table() -> None:
    assert legal_placements(A100, "2g.10gb") == ((0, 2), (2, 2), (4, 2))
    assert legal_placements(A100, "3g.20gb") == ((0, 4), (4, 4))
    assert legal_placements(A100, "1g.10gb") == ((0, 2), (2, 2), (4, 2), (6, 2))
    assert legal_placements(A100, "7g.40gb") == ((0, 8),)
    assert legal_placements(A100, "9g.99gb") == ()


def test_driver_puts_new_instances_at_the_highest_free_start() -> None:
    # The MIG guide: -cgi 19,14,5 lands at 6:1, 4:2, 0:4.
    state: list[Instance] = []
    for name, want in (("1g.5gb", 6), ("2g.10gb", 4), ("4g.20gb", 0)):
        start = driver_start(A100, state, name)
        assert start == want
        state.append(Instance(name, start, A100.profile(name).memory_slices))  # type: ignore[union-attr]
    assert driver_start(A100, [], "3g.20gb") == 4


def test_the_acceptance_recut_keeps_the_busy_2g() -> None:
    current = cut(A100, ["2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"], busy={1})
    busy = next(i for i in current if i.busy)
    plan = plan_recut(A100, current, ["2g.10gb", "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb", "1g.5gb"])
    assert not plan.full_drain
    assert busy in plan.keep
    assert all(s.uuid != busy.uuid for s in plan.destroys)
    assert [s.profile for s in plan.destroys] == ["2g.10gb", "2g.10gb"]  # the 1g.5gb stays
    after = apply_steps(A100, current, plan.steps)
    assert Counter(i.profile for i in after) == Counter(plan.target)


def test_a_busy_instance_of_a_dropped_profile_forces_a_whole_gpu_drain() -> None:
    current = cut(A100, ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"], busy={0})
    plan = plan_recut(A100, current, ["2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"])
    assert plan.full_drain and plan.blocking == ("MIG-0",) and not plan.steps
    assert "busy" in plan.why


def test_a_busy_instance_in_the_wrong_place_forces_a_drain() -> None:
    # a 3g.20gb at start 0 is busy; 4g.20gb can only sit at 0.
    current = [Instance("3g.20gb", 0, 4, 1, "MIG-a", busy=True), Instance("3g.20gb", 4, 4, 2, "MIG-b")]
    plan = plan_recut(A100, current, ["4g.20gb", "3g.20gb"])
    assert plan.full_drain and plan.blocking == ("MIG-a",)


def test_mig_mode_changes_take_the_whole_gpu() -> None:
    current = cut(A100, ["7g.40gb"])
    plan = plan_recut(A100, current, ["full"])
    assert plan.full_drain and "mode" in plan.why


def test_same_layout_changes_nothing() -> None:
    current = cut(A100, ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"], busy={2})
    plan = plan_recut(A100, current, ["1g.5gb", "2g.10gb", "1g.5gb", "3g.20gb"])
    assert not plan.changes and len(plan.keep) == 4


def test_step_commands_name_one_instance() -> None:
    current = cut(A100, ["3g.20gb", "3g.20gb"])
    plan = plan_recut(A100, current, ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"])
    cmds = [c for s in plan.steps for c in s.commands(0, A100)]
    assert cmds[:2] == ["nvidia-smi mig -i 0 -gi 2 -dci", "nvidia-smi mig -i 0 -gi 2 -dgi"] or \
        cmds[:2] == ["nvidia-smi mig -i 0 -gi 1 -dci", "nvidia-smi mig -i 0 -gi 1 -dgi"]
    assert all("-cgi" in c for c in cmds[2:]) and len(cmds) == 5


LAYOUTS = [list(layout) for layout in valid_layouts("A100-40GB")]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS), st.sets(st.integers(0, 6)))
def test_a_plan_never_destroys_a_busy_instance_and_reaches_the_target(
        layout: list[str], target: list[str], busy: set[int]) -> None:
    current = cut(A100, layout, busy)
    plan = plan_recut(A100, current, target)
    busy_uuids = {i.uuid for i in current if i.busy}
    if plan.full_drain:
        # a drain only when busy instances are really in the way
        assert busy_uuids and set(plan.blocking) == busy_uuids
        free_only = [Instance(i.profile, i.start, i.size, i.gi_id, i.uuid) for i in current]
        assert not plan_recut(A100, free_only, target).full_drain
        return
    assert not busy_uuids & {s.uuid for s in plan.destroys}
    assert busy_uuids <= {i.uuid for i in plan.keep}
    after = apply_steps(A100, current, plan.steps)  # every step legal under the driver's rule
    assert Counter(i.profile for i in after) == Counter(target)
    spans = [k for i in after for k in i.span]
    assert len(spans) == len(set(spans)) and max(spans, default=0) < A100.memory_slices
    # it keeps as many free instances as the target allows: none kept that could not be
    kept_free = [i for i in plan.keep if not i.busy]
    assert len(kept_free) <= sum((Counter(target) & Counter(i.profile for i in current if not i.busy)).values())


def test_nvml_inventory_records_each_instance_placement() -> None:
    from ds01q.inventory.nvml import read_nvml
    from tests.fakes.fake_pynvml import FakePynvml

    fake = FakePynvml([("NVIDIA A100-PCIE-40GB", ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"))])
    (rec,) = read_nvml(fake)
    assert [(i.profile, i.start, i.size) for i in rec.instances] == \
        [(p, s, A100.profile(p).memory_slices) for p, s, _ in fake.instances(0)]  # type: ignore[union-attr]
    assert {i.uuid for i in rec.instances} == {s.uuid for s in rec.slices}
    assert all(i.gi_id for i in rec.instances)
    (rec,) = read_nvml(FakePynvml([("NVIDIA A100-PCIE-40GB", ("7g.40gb",))], privileged=False))
    assert rec.instances == ()  # NVML refuses GPU instance handles without privileges


def test_static_inventory_may_declare_starts() -> None:
    import pytest

    from ds01q.errors import ConfigError
    from ds01q.inventory.static import static_inventory

    gpu = {"uuid": "GPU-1", "name": "NVIDIA A100-PCIE-40GB",
           "mig": [{"uuid": "MIG-a", "profile": "3g.20gb", "start": 4}, {"uuid": "MIG-b", "profile": "2g.10gb",
                                                                         "start": 0}]}
    (rec,) = static_inventory([gpu])
    assert [(i.uuid, i.start, i.size) for i in rec.instances] == [("MIG-a", 4, 4), ("MIG-b", 0, 2)]
    gpu["mig"][1]["start"] = 6  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"mig\[1\]\.start: 6 is not a start of 2g.10gb \(allowed: 0, 2, 4\)"):
        static_inventory([gpu])
    gpu["mig"][1]["start"] = 4  # type: ignore[index]
    with pytest.raises(ConfigError, match="overlaps"):
        static_inventory([gpu])


def test_fake_smi_destroys_one_instance_and_refuses_a_busy_one() -> None:
    from tests.fakes.fake_pynvml import FakePynvml

    fake = FakePynvml([("NVIDIA A100-PCIE-40GB", ("2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"))])
    (_, _, busy_uuid), (p, start, _), *_ = fake.instances(0)
    fake.set_instance_busy(busy_uuid)
    gi_of = {m.uuid: m.gi_id for m in fake.gpus[0].migs.values()}
    r = fake.nvidia_smi(["nvidia-smi", "mig", "-i", "0", "-gi", str(gi_of[busy_uuid]), "-dci"])
    assert r.returncode != 0 and "In use" in r.stderr
    other = fake.instances(0)[1][2]
    for flag in ("-dci", "-dgi"):
        assert fake.nvidia_smi(["nvidia-smi", "mig", "-i", "0", "-gi", str(gi_of[other]), flag]).returncode == 0
    assert len(fake.instances(0)) == 3 and busy_uuid in [u for _, _, u in fake.instances(0)]
