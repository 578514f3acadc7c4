"""The inventory declared in the config file (ds01q.inventory.static)."""
from __future__ import annotations

from typing import Any

import pytest

from ds01q.errors import ConfigError
from ds01q.inventory import parse_memory_mb, static_inventory

A100 = "NVIDIA A100-PCIE-40GB"

DESIGN_EXAMPLE: list[dict[str, Any]] = [
    {
        "uuid": "GPU-00000000-0000-0000-0000-000000000001",
        "name": A100,
        "mig": [
            {"uuid": "MIG-00000000-0000-0000-0000-000000000011", "profile": "2g.10gb"},
            {"uuid": "MIG-00000000-0000-0000-0000-000000000012", "profile": "2g.10gb"},
            {"uuid": "MIG-00000000-0000-0000-0000-000000000013", "profile": "2g.10gb"},
        ],
    },
    {"uuid": "GPU-00000000-0000-0000-0000-000000000002", "name": A100},
]


def test_design_example() -> None:
    mig_gpu, whole = static_inventory(DESIGN_EXAMPLE, node="gpu01")
    assert (mig_gpu.index, mig_gpu.mig_enabled, mig_gpu.memory_mb, mig_gpu.utilization) == (0, True, 40960, None)
    assert [s.uuid for s in mig_gpu.slices] == [
        "MIG-00000000-0000-0000-0000-000000000011",
        "MIG-00000000-0000-0000-0000-000000000012",
        "MIG-00000000-0000-0000-0000-000000000013",
    ]
    for s in mig_gpu.slices:
        assert (s.gpu_uuid, s.profile, s.compute_slices, s.gpu_compute_slices, s.memory_mb, s.node, s.gpu_name) == (
            mig_gpu.uuid, "2g.10gb", 2, 7, 9984, "gpu01", A100)
    assert (whole.index, whole.mig_enabled) == (1, False)
    (full,) = whole.slices
    assert (full.uuid, full.gpu_uuid, full.profile, full.compute_slices, full.gpu_compute_slices, full.memory_mb) == (
        "GPU-00000000-0000-0000-0000-000000000002", whole.uuid, "full", 7, 7, 40960)
    assert mig_gpu.layout == ["2g.10gb"] * 3 and whole.layout == ["full"]


def test_unknown_profile_names_the_path_and_the_allowed_profiles() -> None:
    gpus = [{"uuid": "GPU-1", "name": A100, "mig": [{"uuid": "MIG-1", "profile": "1g.5gb"},
                                                  {"uuid": "MIG-2", "profile": "9g.99gb"}]}]
    with pytest.raises(ConfigError) as err:
        static_inventory(gpus)
    assert str(err.value) == (
        "inventory.gpus[0].mig[1].profile: '9g.99gb' is not a profile of NVIDIA A100-PCIE-40GB "
        "(allowed: 1g.5gb, 1g.5gb+me, 1g.10gb, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb)")


def test_layout_that_cannot_exist_is_rejected() -> None:
    gpus = [{"uuid": "GPU-1", "name": A100, "mig": [{"uuid": f"MIG-{i}", "profile": "3g.20gb"} for i in range(3)]}]
    with pytest.raises(ConfigError, match=r"^inventory\.gpus\[0\]\.mig: 3g\.20gb, 3g\.20gb, 3g\.20gb do not fit "
                                          r"together on one NVIDIA A100-PCIE-40GB$"):
        static_inventory(gpus)


def test_unknown_gpu_assumes_seven_slices_and_takes_memory_from_the_key() -> None:
    (gpu,) = static_inventory([{"uuid": "GPU-x", "name": "NVIDIA GeForce RTX 4090", "memory": "24g"}])
    (s,) = gpu.slices
    assert (s.profile, s.compute_slices, s.gpu_compute_slices, s.memory_mb, gpu.memory_mb) == (
        "full", 7, 7, 24576, 24576)
    (named,) = static_inventory([{"uuid": "GPU-y", "name": "Future GPU 96GB"}])
    assert named.memory_mb == 96 * 1024
    (bare,) = static_inventory([{"uuid": "GPU-z", "name": "Mystery"}])
    assert bare.memory_mb == 0


def test_unknown_gpu_with_mig_slices_parses_the_profile_names() -> None:
    gpus = [{"uuid": "GPU-x", "name": "NVIDIA B200", "memory": 184320,
             "mig": [{"uuid": "MIG-a", "profile": "2g.45gb"}, {"uuid": "MIG-b", "profile": "1c.2g.45gb"}]}]
    (gpu,) = static_inventory(gpus)
    assert [(s.profile, s.compute_slices, s.gpu_compute_slices, s.memory_mb) for s in gpu.slices] == [
        ("2g.45gb", 2, 7, 45 * 1024), ("1c.2g.45gb", 1, 7, 45 * 1024)]
    with pytest.raises(ConfigError, match=r"inventory\.gpus\[0\]\.mig\[0\]\.profile: 'big' is not a MIG profile"):
        static_inventory([{"uuid": "GPU-x", "name": "NVIDIA B200", "mig": [{"uuid": "MIG-a", "profile": "big"}]}])


def test_a30_slices_are_quarters() -> None:
    mig = [{"uuid": "MIG-a", "profile": "2g.12gb"}, {"uuid": "MIG-b", "profile": "1g.6gb"}]
    (gpu,) = static_inventory([{"uuid": "GPU-a", "name": "NVIDIA A30", "mig": mig}])
    assert [(s.gpu_compute_slices, s.gpu_equiv) for s in gpu.slices] == [(4, 0.5), (4, 0.25)]


def test_empty_mig_list_means_mig_on_with_no_slices() -> None:
    (gpu,) = static_inventory([{"uuid": "GPU-a", "name": A100, "mig": []}])
    assert gpu.mig_enabled and gpu.slices == () and gpu.layout == []


def test_per_gpu_node_and_empty_inventory() -> None:
    (gpu,) = static_inventory([{"uuid": "GPU-a", "name": A100, "node": "gpu02"}], node="gpu01")
    assert gpu.slices[0].node == gpu.node == "gpu02"
    assert static_inventory(DESIGN_EXAMPLE, node="gpu01")[1].node == "gpu01"
    assert static_inventory([]) == [] and static_inventory(None) == []


@pytest.mark.parametrize("gpus, message", [
    ({"uuid": "GPU-a"}, "inventory.gpus: expected a list of GPUs, got dict"),
    (["GPU-a"], "inventory.gpus[0]: expected a mapping with uuid, name and optional mig"),
    ([{"name": A100}], "inventory.gpus[0].uuid: required, a non-empty string"),
    ([{"uuid": "GPU-a"}], "inventory.gpus[0].name: required, the NVML name such as 'NVIDIA A100-PCIE-40GB'"),
    ([{"uuid": "GPU-a", "name": A100, "migs": []}],
     "inventory.gpus[0]: unknown key 'migs' (allowed: uuid, name, mig, memory, node)"),
    ([{"uuid": "GPU-a", "name": A100}, {"uuid": "GPU-a", "name": A100}],
     "inventory.gpus[1].uuid: duplicate uuid 'GPU-a' (also at inventory.gpus[0].uuid)"),
    ([{"uuid": "GPU-a", "name": A100, "mig": [{"uuid": "GPU-a", "profile": "7g.40gb"}]}],
     "inventory.gpus[0].mig[0].uuid: duplicate uuid 'GPU-a' (also at inventory.gpus[0].uuid)"),
    ([{"uuid": "GPU-a", "name": A100, "mig": "2g.10gb"}], "inventory.gpus[0].mig: expected a list of {uuid, profile}"),
    ([{"uuid": "GPU-a", "name": A100, "mig": [{"uuid": "MIG-a", "profile": "full"}]}],
     "inventory.gpus[0].mig[0].profile: 'full' is not a profile of NVIDIA A100-PCIE-40GB "
     "(allowed: 1g.5gb, 1g.5gb+me, 1g.10gb, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb)"),
    ([{"uuid": "GPU-a", "name": A100, "mig": [{"uuid": "MIG-a", "profile": "7g.40gb", "size": 1}]}],
     "inventory.gpus[0].mig[0]: unknown key 'size' (allowed: uuid, profile, start)"),
    ([{"uuid": "GPU-a", "name": "X", "memory": "lots"}],
     "inventory.gpus[0].memory: expected a size such as 40g or 40960m, got 'lots'"),
], ids=lambda v: v if isinstance(v, str) and v.startswith("inventory") else "")
def test_config_errors_name_the_key(gpus: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        static_inventory(gpus)
    assert str(err.value) == message


@pytest.mark.parametrize("value, mb", [(40960, 40960), ("40g", 40960), ("40GiB", 40960), ("512m", 512),
                                       ("1t", 1048576), ("1.5g", 1536), ("24576", 24576)])
def test_parse_memory_mb(value: object, mb: int) -> None:
    assert parse_memory_mb(value, "x") == mb


@pytest.mark.parametrize("value", [-1, True, "g", "12q", None, 1.5])
def test_parse_memory_mb_rejects(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^x: "):
        parse_memory_mb(value, "x")
