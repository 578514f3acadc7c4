"""Layout planning, nvidia-smi commands and the controller (ds01q.mig.planner, ds01q.mig.smi)."""
from __future__ import annotations

import subprocess
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01q.errors import InventoryError, RequestError
from ds01q.mig import (
    MODELS,
    MigController,
    Plan,
    is_valid_layout,
    make_plan,
    mig_commands,
    plan_layout,
)
from ds01q.mig.profiles import valid_layouts
from tests.fakes import FakePynvml

A100 = "NVIDIA A100-PCIE-40GB"
NVML_NAMES = {
    "A100-40GB": "NVIDIA A100-PCIE-40GB",
    "A100-80GB": "NVIDIA A100-SXM4-80GB",
    "H100-80GB": "NVIDIA H100 80GB HBM3",
    "H100-94GB": "NVIDIA H100 NVL",
    "H200-141GB": "NVIDIA H200",
    "A30-24GB": "NVIDIA A30",
}


def test_queue_of_2g_on_idle_a100_gives_three_2g_and_one_1g() -> None:
    assert plan_layout(A100, ["2g.10gb"] * 10) == ["2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"]


def test_exact_matches_are_kept_and_the_rest_is_filled_with_1g() -> None:
    layout = plan_layout(A100, ["3g.20gb", "2g.10gb"])
    assert Counter(layout) == Counter({"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2})


def test_mixed_demand_serves_every_shape_it_can() -> None:
    layout = plan_layout(A100, ["3g.20gb", "3g.20gb"] + ["1g.5gb"] * 7)
    assert "3g.20gb" in layout and "1g.5gb" in layout and is_valid_layout(MODELS["A100-40GB"], layout)


def test_mostly_full_demand_turns_mig_off() -> None:
    assert plan_layout(A100, ["full", "full", "2g.10gb"]) == ["full"]
    assert plan_layout(A100, ["full", "1g.5gb", "1g.5gb"]) == ["full"]


def test_full_demand_that_does_not_dominate_keeps_mig() -> None:
    layout = plan_layout(A100, ["full"] + ["1g.5gb"] * 7)
    assert layout == ["1g.5gb"] * 7


def test_no_demand_gives_the_most_slots() -> None:
    assert plan_layout(A100, []) == ["1g.5gb"] * 7
    assert plan_layout("NVIDIA A30", []) == ["1g.6gb"] * 4


def test_any_requests_are_served_by_small_slices() -> None:
    assert plan_layout(A100, ["any"] * 3) == ["1g.5gb"] * 7


def test_foreign_profiles_are_ignored() -> None:
    assert plan_layout(A100, ["1g.18gb", "5g.99gb", "1c.3g.20gb", "2g.10gb", "2g.10gb", "2g.10gb"]) == [
        "2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"]


def test_media_extension_profile_is_created_only_on_demand() -> None:
    assert "1g.5gb+me" not in plan_layout(A100, ["1g.5gb"])
    assert "1g.5gb+me" in plan_layout(A100, ["1g.5gb+me"])


def test_whole_gpu_profile_is_a_mig_instance() -> None:
    assert plan_layout(A100, ["7g.40gb"]) == ["7g.40gb"]


def test_unknown_gpu_is_a_request_error() -> None:
    with pytest.raises(RequestError, match="unknown MIG GPU model 'NVIDIA GeForce RTX 4090'"):
        plan_layout("NVIDIA GeForce RTX 4090", ["full"])


def _demand(key: str) -> st.SearchStrategy[list[str]]:
    names = list(MODELS[key].profile_names) + ["full", "any", "2g.35gb", "1c.3g.20gb"]
    return st.lists(st.sampled_from(names), max_size=25)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), key=st.sampled_from(sorted(MODELS)))
def test_every_planned_layout_is_valid_and_maximal(data: st.DataObject, key: str) -> None:
    model = MODELS[key]
    demand = data.draw(_demand(key))
    layout = plan_layout(NVML_NAMES[key], demand)
    assert is_valid_layout(model, layout)
    if layout == ["full"]:
        assert "full" in demand
        return
    # maximal: not even the smallest profile fits any more
    assert not any(is_valid_layout(model, [*layout, p.name]) for p in model.profiles if not p.media_extensions)
    # a single demanded profile always gets at least one instance
    mig = [d for d in demand if model.profile(d) is not None]
    if len(set(mig)) == 1 and demand.count("full") == 0:
        assert mig[0] in layout


@settings(max_examples=40, deadline=None)
@given(data=st.data(), key=st.sampled_from(sorted(MODELS)))
def test_planned_commands_build_the_layout_on_the_fake_gpu(data: st.DataObject, key: str) -> None:
    fake = FakePynvml([(NVML_NAMES[key], ["full"])])
    demand = data.draw(_demand(key))
    layout = plan_layout(NVML_NAMES[key], demand)
    MigController(run=fake.nvidia_smi).apply(0, ["full"], layout, gpu_name=NVML_NAMES[key])
    assert Counter(fake.layout(0)) == Counter(layout)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_largest_first_creation_succeeds_for_every_valid_layout(key: str) -> None:
    """The driver places each new GI at the highest free start; largest-first must always fit."""
    name = NVML_NAMES[key]
    fake = FakePynvml([(name, ["full"])])
    controller = MigController(run=fake.nvidia_smi)
    current: list[str] = ["full"]
    for layout in valid_layouts(key):
        controller.apply(0, current, list(layout), gpu_name=name)
        assert Counter(fake.layout(0)) == Counter(layout)
        current = list(layout)


def test_smallest_first_creation_fails_like_the_guide_says() -> None:
    fake = FakePynvml([(A100, [])])
    result = fake.nvidia_smi(["nvidia-smi", "mig", "-i", "0", "-cgi", "19,19,14,9", "-C"])
    assert result.returncode != 0 and "Insufficient Resources" in result.stderr
    fake.set_layout(0, [])
    assert fake.nvidia_smi(["nvidia-smi", "mig", "-i", "0", "-cgi", "9,19,14,19", "-C"]).returncode == 0


def test_commands_from_mig_off() -> None:
    layout = plan_layout(A100, ["2g.10gb"] * 3)
    assert mig_commands(0, ["full"], layout, gpu_name=A100) == [
        "nvidia-smi -i 0 -mig 1",
        "nvidia-smi mig -i 0 -cgi 14,14,14,19 -C",
    ]


def test_commands_between_layouts_destroy_then_create_largest_first() -> None:
    assert mig_commands(2, ["1g.5gb"] * 7, ["1g.5gb", "2g.10gb", "3g.20gb", "1g.5gb"], gpu_name=A100) == [
        "nvidia-smi mig -i 2 -dci",
        "nvidia-smi mig -i 2 -dgi",
        "nvidia-smi mig -i 2 -cgi 9,14,19,19 -C",
    ]


def test_commands_to_turn_mig_off() -> None:
    assert mig_commands(1, ["3g.20gb", "3g.20gb"], ["full"]) == [
        "nvidia-smi mig -i 1 -dci",
        "nvidia-smi mig -i 1 -dgi",
        "nvidia-smi -i 1 -mig 0",
    ]
    assert mig_commands(1, [], ["full"]) == ["nvidia-smi -i 1 -mig 0"]


def test_no_commands_when_the_layout_is_in_place() -> None:
    assert mig_commands(0, ["2g.10gb", "1g.5gb"], ["1g.5gb", "2g.10gb"], gpu_name=A100) == []
    assert mig_commands(0, ["full"], ["full"]) == []


def test_commands_without_gpu_name_use_ids_only_when_unambiguous() -> None:
    # 2g.10gb exists only on the A100-40GB: IDs
    assert mig_commands(0, [], ["1g.5gb", "2g.10gb"]) == ["nvidia-smi mig -i 0 -cgi 14,19 -C"]
    # with 3g.40gb only the 80 GB A100/H100 fit, and they agree: IDs
    assert mig_commands(0, [], ["1g.10gb", "3g.40gb"])[-1] == "nvidia-smi mig -i 0 -cgi 9,19 -C"
    # 1g.10gb alone is ID 15 on an A100-40GB but 19 on an A100-80GB/H100: names
    assert mig_commands(0, [], ["1g.10gb", "1g.10gb"])[-1] == "nvidia-smi mig -i 0 -cgi 1g.10gb,1g.10gb -C"


def test_commands_reject_layouts_that_do_not_fit() -> None:
    with pytest.raises(RequestError, match="does not fit on NVIDIA A100-PCIE-40GB"):
        mig_commands(0, ["full"], ["2g.10gb"] * 4, gpu_name=A100)
    with pytest.raises(RequestError, match="cannot be combined"):
        mig_commands(0, ["full"], ["full", "1g.5gb"], gpu_name=A100)
    with pytest.raises(RequestError, match="does not fit on any known MIG GPU"):
        mig_commands(0, [], ["5g.99gb"])


def test_plan_json_and_cost() -> None:
    plan = make_plan(0, "GPU-00000000-0000-0000-0000-000000000001", A100, ["full"], ["2g.10gb"] * 4, cost=[7, 9])
    assert plan.to_json() == {
        "gpu": "GPU-00000000-0000-0000-0000-000000000001",
        "name": A100,
        "layout": ["2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"],
        "commands": ["nvidia-smi -i 0 -mig 1", "nvidia-smi mig -i 0 -cgi 14,14,14,19 -C"],
    }
    assert plan.cost == (7, 9) and plan.changes and plan.gpu == plan.gpu_uuid
    unchanged = make_plan(0, "GPU-x", A100, list(plan.layout), ["2g.10gb"] * 4, cost=[7])
    assert unchanged.commands == () and unchanged.cost == () and not unchanged.changes


# --------------------------------------------------------------------------- controller


class Recorder:
    def __init__(self, fail_on: str | None = None, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.fail_on, self.stderr = fail_on, stderr

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        failed = self.fail_on is not None and self.fail_on in " ".join(argv)
        return subprocess.CompletedProcess(argv, 6 if failed else 0, "", self.stderr if failed else "")


def test_controller_runs_the_commands_in_order() -> None:
    rec = Recorder()
    done = MigController(run=rec).apply(0, ["1g.5gb"] * 7, ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"], gpu_name=A100)
    assert rec.calls == [
        ["nvidia-smi", "mig", "-i", "0", "-dci"],
        ["nvidia-smi", "mig", "-i", "0", "-dgi"],
        ["nvidia-smi", "mig", "-i", "0", "-cgi", "9,14,19,19", "-C"],
    ]
    assert done == [" ".join(c) for c in rec.calls]


def test_dry_run_runs_nothing() -> None:
    rec = Recorder()
    commands = MigController(run=rec).apply(0, ["full"], ["7g.40gb"], dry_run=True, gpu_name=A100)
    assert commands == ["nvidia-smi -i 0 -mig 1", "nvidia-smi mig -i 0 -cgi 0 -C"] and rec.calls == []


def test_controller_stops_at_the_first_failure_with_one_line() -> None:
    rec = Recorder(fail_on="-dgi", stderr="Unable to destroy GPU instance ID 1\nfrom GPU 0: In use by another client\n")
    with pytest.raises(InventoryError) as err:
        MigController(run=rec).apply(0, ["2g.10gb"], ["3g.20gb"], gpu_name=A100)
    assert len(rec.calls) == 2  # -dci ran, -dgi failed, -cgi never ran
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("MIG command failed (exit 6): nvidia-smi mig -i 0 -dgi: Unable to destroy GPU instance ID 1 "
                          "from GPU 0: In use by another client")
    assert "1 of 3 commands had run" in msg


def test_busy_gpu_on_the_fake_fails_the_same_way() -> None:
    fake = FakePynvml([(A100, ["2g.10gb"])])
    fake.set_busy(0)
    with pytest.raises(InventoryError, match=r"nvidia-smi mig -i 0 -dci: .*In use by another client"):
        MigController(run=fake.nvidia_smi).apply(0, ["2g.10gb"], ["3g.20gb"], gpu_name=A100)
    assert fake.layout(0) == ["2g.10gb"]


def test_missing_nvidia_smi_is_an_inventory_error() -> None:
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(argv[0])

    with pytest.raises(InventoryError, match="nvidia-smi not found on PATH"):
        MigController(run=run).apply(0, ["full"], ["7g.40gb"], gpu_name=A100)


def test_apply_plan_uses_the_plans_commands() -> None:
    rec = Recorder()
    plan = Plan("GPU-x", A100, ("7g.40gb",), ("nvidia-smi -i 3 -mig 1", "nvidia-smi mig -i 3 -cgi 0 -C"))
    assert MigController(run=rec).apply_plan(plan) == list(plan.commands)
    assert rec.calls[0] == ["nvidia-smi", "-i", "3", "-mig", "1"]
