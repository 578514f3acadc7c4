"""Placement tables, layout validity and profile naming (ds01q.mig.profiles, ds01q.mig.naming)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ds01q.errors import RequestError
from ds01q.mig import (
    MODELS,
    compute_slices_for,
    gpu_model,
    is_valid_layout,
    mig_memory_gb,
    place_layout,
    possible_profiles,
    profile_name,
    require_model,
)
from ds01q.mig.profiles import valid_layouts

A100_40 = MODELS["A100-40GB"]
GIB = 1 << 30


@pytest.mark.parametrize(
    "nvml_name, key",
    [
        ("NVIDIA A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", "A100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("NVIDIA H100 PCIe", "H100-80GB"),
        ("NVIDIA H100 SXM5 80GB", "H100-80GB"),
        ("NVIDIA H100 NVL", "H100-94GB"),
        ("NVIDIA H200", "H200-141GB"),
        ("NVIDIA H200 NVL", "H200-141GB"),
        ("NVIDIA A30", "A30-24GB"),
        ("A100-40GB", "A100-40GB"),
    ],
)
def test_gpu_model_matches_nvml_names(nvml_name: str, key: str) -> None:
    model = gpu_model(nvml_name)
    assert model is not None and model.key == key


@pytest.mark.parametrize("nvml_name", ["NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-32GB", "NVIDIA A10", "NVIDIA L40S"])
def test_gpus_without_mig_have_no_table(nvml_name: str) -> None:
    assert gpu_model(nvml_name) is None
    with pytest.raises(RequestError, match="unknown MIG GPU model"):
        require_model(nvml_name)


def test_a100_40gb_table_is_the_guides() -> None:
    rows = {p.name: (p.profile_id, p.compute_slices, p.memory_slices, p.max_count, p.starts) for p in A100_40.profiles}
    assert rows == {
        "1g.5gb": (19, 1, 1, 7, (0, 1, 2, 3, 4, 5, 6)),
        "1g.5gb+me": (20, 1, 1, 1, (0, 1, 2, 3, 4, 5, 6)),
        "1g.10gb": (15, 1, 2, 4, (0, 2, 4, 6)),
        "2g.10gb": (14, 2, 2, 3, (0, 2, 4)),
        "3g.20gb": (9, 3, 4, 2, (0, 4)),
        "4g.20gb": (5, 4, 4, 1, (0,)),
        "7g.40gb": (0, 7, 8, 1, (0,)),
    }


@pytest.mark.parametrize("key, names", [
    ("A100-80GB", ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
    ("H100-80GB", ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
    ("H200-141GB", ["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"]),
    ("A30-24GB", ["1g.6gb", "1g.6gb+me", "2g.12gb", "2g.12gb+me", "4g.24gb"]),
])
def test_other_products_offer_the_guides_profiles(key: str, names: list[str]) -> None:
    assert list(MODELS[key].profile_names) == names


READ_ON_A_REAL_GPU = sorted((Path(__file__).parents[1] / "fixtures" / "nvml").glob("*-driver-*.json"))


@pytest.mark.parametrize("reading", READ_ON_A_REAL_GPU, ids=lambda p: p.stem)
def test_the_table_matches_what_nvml_reported_on_a_real_gpu(reading: Path) -> None:
    """bench/nvml_probe.py's reading of a real GPU (every GI profile NVML offers, with its possible
    placements): ds01q's table has each profile at the same NVML index with the same ID, name,
    slices, count, memory and starts, and no profile NVML does not offer."""
    got = json.loads(reading.read_text())
    model = gpu_model(got["name"])
    assert model is not None and model.memory_mb == got["memory_mb"]
    want = {r["nvml_index"]: (r["id"], r["name"].removeprefix("MIG "), r["slice_count"], r["instance_count"],
                              r["memory_mb"], tuple(s for s, _ in r["placements"]), {z for _, z in r["placements"]})
            for r in got["profiles"]}
    have = {p.nvml_index: (p.profile_id, p.name, p.compute_slices, p.max_count, p.memory_mb, p.starts,
                           {p.memory_slices}) for p in model.profiles}
    assert have == want
    for p in model.profiles:  # the naming rule gives NVML's names from NVML's figures
        assert profile_name(p.compute_slices, p.compute_slices, p.memory_mb, got["memory_mb"] << 20,
                            "+me" if p.media_extensions else "") == p.name


def test_a30_is_four_slices_with_published_ids() -> None:
    a30 = MODELS["A30-24GB"]
    assert (a30.compute_slices, a30.memory_slices) == (4, 4)
    assert {p.name: p.profile_id for p in a30.profiles} == {
        "1g.6gb": 14, "1g.6gb+me": 21, "2g.12gb": 5, "2g.12gb+me": 6, "4g.24gb": 0}


@pytest.mark.parametrize("model", MODELS.values(), ids=lambda m: m.key)
def test_every_table_is_self_consistent(model) -> None:
    for p in model.profiles:
        # each profile fits alone, max_count times, and not once more
        assert is_valid_layout(model, [p.name] * p.max_count), p.name
        assert not is_valid_layout(model, [p.name] * (p.max_count + 1)), p.name
        assert all(s + p.memory_slices <= model.memory_slices for s in p.starts)
        # the instance memory figure names back to the profile under NVML's rule
        suffix = "+me" if p.media_extensions else ""
        assert profile_name(p.compute_slices, p.compute_slices, p.memory_mb, model.memory_mb << 20, suffix) == p.name
        assert p.memory_mb <= model.memory_mb


@pytest.mark.parametrize("layout", [
    ["2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"],
    ["2g.10gb", "2g.10gb", "2g.10gb", "1g.10gb"],
    ["1g.5gb"] * 7,
    ["3g.20gb", "3g.20gb"],
    ["4g.20gb", "3g.20gb"],
    ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"],  # mig-parted all-balanced
    ["3g.20gb", "1g.5gb", "2g.10gb", "1g.5gb"],  # the guide's -cgi 9,19,14,19
    ["1g.10gb"] * 4,
    ["7g.40gb"],
    ["1g.5gb+me"] + ["1g.5gb"] * 6,
    ["full"],
    [],
])
def test_valid_a100_40gb_layouts(layout: list[str]) -> None:
    assert is_valid_layout(A100_40, layout)


@pytest.mark.parametrize("layout, why", [
    (["2g.10gb"] * 4, "2g has no start 6 and 8 compute slices are too many"),
    (["1g.5gb"] * 8, "max 7"),
    (["3g.20gb", "3g.20gb", "1g.5gb"], "2x3g uses all 8 memory slices"),
    (["4g.20gb", "4g.20gb"], "max 1"),
    (["1g.10gb"] * 5, "max 4"),
    (["7g.40gb", "1g.5gb"], "7g fills the GPU"),
    (["1g.5gb+me", "1g.5gb+me"], "one media-extension instance"),
    (["4g.20gb", "2g.10gb", "2g.10gb"], "8 compute slices"),
    (["3g.20gb", "2g.10gb", "2g.10gb", "1g.5gb"], "3g at 0 or 4 leaves no room for two 2g and a 1g"),
    (["full", "1g.5gb"], "full means MIG off"),
    (["9g.99gb"], "unknown profile"),
    (["1g.10gb", "1g.10gb", "1g.10gb", "2g.10gb", "1g.5gb"], "9 memory slices"),
])
def test_invalid_a100_40gb_layouts(layout: list[str], why: str) -> None:
    assert not is_valid_layout(A100_40, layout), why


def test_seven_1g_leave_the_last_memory_slice_for_a_two_slice_1g_only() -> None:
    placed = place_layout(A100_40, ["1g.5gb"] * 6 + ["1g.10gb"])
    assert placed is not None and ("1g.10gb", 6) in placed


def test_place_layout_gives_non_overlapping_valid_starts() -> None:
    for key in MODELS:
        model = MODELS[key]
        for layout in valid_layouts(key):
            placed = place_layout(model, layout)
            assert placed is not None and sorted(n for n, _ in placed) == sorted(layout)
            used: set[int] = set()
            for name, start in placed:
                p = model.profile(name)
                assert p is not None and start in p.starts
                span = set(range(start, start + p.memory_slices))
                assert not span & used
                used |= span


def test_valid_layouts_count_and_a30_examples() -> None:
    assert len(valid_layouts("A100-40GB")) == 127
    a30 = MODELS["A30-24GB"]
    assert is_valid_layout(a30, ["2g.12gb", "1g.6gb", "1g.6gb"])
    assert is_valid_layout(a30, ["2g.12gb+me", "2g.12gb"])
    assert not is_valid_layout(a30, ["2g.12gb+me", "1g.6gb+me"])
    assert not is_valid_layout(a30, ["4g.24gb", "1g.6gb"])


def test_possible_profiles() -> None:
    got = possible_profiles(["NVIDIA A100-PCIE-40GB", "NVIDIA A30", "NVIDIA GeForce RTX 4090"])
    assert got == frozenset({"full", *A100_40.profile_names, *MODELS["A30-24GB"].profile_names})
    assert possible_profiles([]) == frozenset({"full"})


@pytest.mark.parametrize("profile, gcs, want", [
    ("2g.10gb", 7, 2), ("1g.5gb+me", 7, 1), ("7g.40gb", 7, 7), ("1c.3g.20gb", 7, 1), ("full", 7, 7), ("full", 4, 4),
])
def test_compute_slices_for(profile: str, gcs: int, want: int) -> None:
    assert compute_slices_for(profile, gcs) == want


@pytest.mark.parametrize("bad", ["", "gpu", "2g", "10gb", "2g.10", "x2g.10gb"])
def test_compute_slices_for_rejects_non_profiles(bad: str) -> None:
    with pytest.raises(RequestError, match="not a MIG profile"):
        compute_slices_for(bad)


@pytest.mark.parametrize("gi, ci, memory_mb, total_bytes, want", [
    (1, 1, 4864, 42949672960, "1g.5gb"),  # the facts doc's example
    (2, 2, 9984, 42949672960, "2g.10gb"),
    (3, 3, 19968, 42949672960, "3g.20gb"),
    (7, 7, 40192, 42949672960, "7g.40gb"),
    (1, 1, 9856, 81559 << 20, "1g.10gb"),  # H100 80GB HBM3
    (3, 1, 19968, 42949672960, "1c.3g.20gb"),  # CI smaller than its GI
    (4, 2, 24064, 24576 << 20, "2c.4g.24gb"),
    (3, 3, 71424, 143771 << 20, "3g.71gb"),  # a real H200: 70.5 rounds half up, as Go's math.Round
    (1, 1, 11008, 95830 << 20, "1g.12gb"),  # H100 NVL: 11.75 -> 12
])
def test_profile_name_follows_go_nvlib(gi: int, ci: int, memory_mb: int, total_bytes: int, want: str) -> None:
    assert profile_name(gi, ci, memory_mb, total_bytes) == want


def test_mig_memory_gb_rounds_up_to_eighths() -> None:
    assert mig_memory_gb(5121, 40 * GIB) == 10  # just over 1/8 -> 2/8 of 40
    assert mig_memory_gb(5120, 40 * GIB) == 5  # exactly 1/8
    assert mig_memory_gb(1, 40 * GIB) == 5
    assert mig_memory_gb(4864, 40 * GIB + 1) == 5  # ceil(GiB) = 41 -> 5.125 -> 5
    with pytest.raises(ValueError):
        mig_memory_gb(4864, 0)
