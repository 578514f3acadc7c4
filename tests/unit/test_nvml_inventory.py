"""The NVML inventory (ds01q.inventory.nvml) against the fake pynvml, the real pynvml without a
driver, and scripts/gpu-check."""
from __future__ import annotations

import ctypes.util
import importlib.machinery
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pynvml
import pytest

from ds01q.errors import InventoryError
from ds01q.inventory import NO_DRIVER_MESSAGE, read_nvml, read_utilization
from tests.fakes import FakePynvml

REPO = Path(__file__).resolve().parents[2]
A100, H100 = "NVIDIA A100-PCIE-40GB", "NVIDIA H100 80GB HBM3"
GPU_UUID = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MIG_UUID = re.compile(r"^MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_default_fake_reads_as_one_mig_a100_and_one_whole_h100() -> None:
    fake = FakePynvml()
    a100, h100 = read_nvml(fake, node="gpu01")
    assert (a100.index, a100.name, a100.memory_mb, a100.mig_enabled, a100.node) == (0, A100, 40960, True, "gpu01")
    assert GPU_UUID.match(a100.uuid) and a100.utilization is None  # NotSupported in MIG mode
    assert sorted(s.profile for s in a100.slices) == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]
    by_profile = {s.profile: s for s in a100.slices}
    assert (by_profile["3g.20gb"].compute_slices, by_profile["3g.20gb"].memory_mb) == (3, 19968)
    assert (by_profile["2g.10gb"].compute_slices, by_profile["2g.10gb"].memory_mb) == (2, 9984)
    assert by_profile["1g.5gb"].memory_mb == 4864
    for s in a100.slices:
        assert MIG_UUID.match(s.uuid)
        assert (s.gpu_uuid, s.gpu_compute_slices, s.node, s.gpu_name) == (a100.uuid, 7, "gpu01", A100)
    assert len({s.uuid for s in a100.slices}) == 4
    assert a100.layout == [s.profile for s in a100.slices]

    assert (h100.name, h100.memory_mb, h100.mig_enabled, h100.utilization) == (H100, 81559, False, 0.0)
    (full,) = h100.slices
    assert (full.uuid, full.profile, full.compute_slices, full.gpu_compute_slices, full.memory_mb) == (
        h100.uuid, "full", 7, 7, 81559)
    assert full.gpu_equiv == 1.0 and h100.layout == ["full"]
    assert fake.init_count == 0 and fake.shutdown_calls == 1


def test_h100_mig_names_come_from_the_attributes() -> None:
    fake = FakePynvml([(H100, ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"])])
    (gpu,) = read_nvml(fake)
    assert sorted((s.profile, s.memory_mb) for s in gpu.slices) == [
        ("1g.10gb", 9856), ("1g.10gb", 9856), ("2g.20gb", 20096), ("3g.40gb", 40320)]


def test_sparse_mig_indices_are_skipped() -> None:
    fake = FakePynvml([(A100, ["3g.20gb"])])  # placed at memory slice 4 -> MIG device index 4 only
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    fake.nvmlShutdown()
    (gpu,) = read_nvml(fake)
    assert [s.profile for s in gpu.slices] == ["3g.20gb"]


def test_mig_on_without_instances_has_no_slices() -> None:
    (gpu,) = read_nvml(FakePynvml([(A100, [])]))
    assert gpu.mig_enabled and gpu.slices == () and gpu.layout == []


def test_relayout_gives_new_uuids() -> None:
    fake = FakePynvml([(A100, ["2g.10gb"] * 3)])
    before = {s.uuid for s in read_nvml(fake)[0].slices}
    fake.set_layout(0, ["2g.10gb"] * 3)
    after = read_nvml(fake)[0].slices
    assert {s.uuid for s in after}.isdisjoint(before) and [s.profile for s in after] == ["2g.10gb"] * 3
    fake.set_layout(0, ["full"])
    assert [s.profile for s in read_nvml(fake)[0].slices] == ["full"]


def test_compute_instance_smaller_than_its_gpu_instance() -> None:
    (gpu,) = read_nvml(FakePynvml([(A100, ["1c.3g.20gb", "4g.20gb"])]))
    assert sorted((s.profile, s.compute_slices) for s in gpu.slices) == [("1c.3g.20gb", 1), ("4g.20gb", 4)]


def test_media_extension_suffix_needs_privileges() -> None:
    layout = ["1g.5gb+me", "1g.5gb", "3g.20gb"]
    (gpu,) = read_nvml(FakePynvml([(A100, layout)]))
    assert sorted(s.profile for s in gpu.slices) == sorted(layout)
    (gpu,) = read_nvml(FakePynvml([(A100, layout)], privileged=False))
    assert sorted(s.profile for s in gpu.slices) == ["1g.5gb", "1g.5gb", "3g.20gb"]


def test_a30_has_four_compute_slices() -> None:
    (whole,) = read_nvml(FakePynvml([("NVIDIA A30", ["full"])]))
    assert (whole.slices[0].compute_slices, whole.slices[0].gpu_compute_slices, whole.memory_mb) == (4, 4, 24576)
    (mig,) = read_nvml(FakePynvml([("NVIDIA A30", ["2g.12gb", "1g.6gb", "1g.6gb"])]))
    assert sorted(s.profile for s in mig.slices) == ["1g.6gb", "1g.6gb", "2g.12gb"]
    assert {s.gpu_compute_slices for s in mig.slices} == {4}
    assert sum(s.gpu_equiv for s in mig.slices) == 1.0


def test_gpu_without_mig_support_is_one_full_slice() -> None:
    fake = FakePynvml([{"name": "NVIDIA GeForce RTX 4090", "layout": ["full"], "memory_mb": 24564}])
    (gpu,) = read_nvml(fake)
    assert (gpu.mig_enabled, gpu.slices[0].profile, gpu.slices[0].compute_slices, gpu.memory_mb) == (
        False, "full", 7, 24564)


@pytest.mark.parametrize("loaded_library", [False, True], ids=["library-missing", "driver-not-loaded"])
def test_no_driver_is_one_line(loaded_library: bool) -> None:
    fake = FakePynvml()
    fake.no_driver(loaded_library=loaded_library)
    with pytest.raises(InventoryError) as err:
        read_nvml(fake)
    assert str(err.value) == NO_DRIVER_MESSAGE
    assert str(err.value) == (
        "NVIDIA driver not found (libnvidia-ml.so.1): install the driver or set inventory.source: static")
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="an NVIDIA driver is installed here")
def test_real_pynvml_without_driver() -> None:
    with pytest.raises(InventoryError, match=re.escape(NO_DRIVER_MESSAGE)):
        read_nvml()


def test_lost_gpu_names_the_gpu_and_still_shuts_down() -> None:
    fake = FakePynvml()
    fake.lose_gpu(1)
    with pytest.raises(InventoryError, match=r"^NVML could not read GPU 1: GPU is lost$"):
        read_nvml(fake)
    assert fake.init_count == 0 and fake.shutdown_calls == 1


def test_read_utilization() -> None:
    fake = FakePynvml()
    fake.gpus[1].utilization, fake.gpus[1].power_mw, fake.gpus[1].memory_used_mb = 87, 412345, 1000
    mig = next(iter(fake.gpus[0].migs.values()))
    mig.memory_used_mb = 321
    a100, h100 = read_utilization(fake)
    assert (a100.utilization, a100.power_w) == (None, 60.0)
    assert a100.slice_memory_used_mb[mig.uuid] == 321 and len(a100.slice_memory_used_mb) == 4
    assert (h100.utilization, h100.power_w, h100.memory_used_mb, h100.slice_memory_used_mb) == (87.0, 412.345, 1000, {})
    assert fake.init_count == 0


def test_fake_mirrors_the_real_module() -> None:
    fake = FakePynvml()
    api = [n for n, _ in inspect.getmembers(type(fake), inspect.isfunction) if n.startswith("nvml")]
    assert len(api) > 20
    for name in api:
        assert callable(getattr(pynvml, name, None)), f"pynvml has no {name}"
    assert fake.NVMLError_NotFound is pynvml.NVMLError_NotFound
    assert fake.NVML_DEVICE_MIG_ENABLE == pynvml.NVML_DEVICE_MIG_ENABLE
    assert fake.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1 == pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()


def test_fake_replaces_pynvml_in_sys_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePynvml([(A100, ["7g.40gb"])])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    (gpu,) = read_nvml()
    assert [s.profile for s in gpu.slices] == ["7g.40gb"]


# --------------------------------------------------------------------------- scripts/gpu-check


def _gpu_check() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(REPO / "scripts" / "gpu-check"))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="an NVIDIA driver is installed here")
def test_gpu_check_without_driver_prints_one_line_and_exits_1() -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu-check")], capture_output=True, text=True,
                       timeout=60, cwd="/")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"gpu-check: {NO_DRIVER_MESSAGE}\n"


def test_gpu_check_prints_inventory_json_and_never_changes_the_layout(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakePynvml()
    layouts = [fake.layout(0), fake.layout(1)]
    assert _gpu_check().main(["--no-probe"], pynvml_module=fake) == 0
    gpus = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in gpus] == [A100, H100]
    assert sorted(s["profile"] for s in gpus[0]["slices"]) == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]
    assert gpus[1]["slices"][0]["uuid"] == fake.gpus[1].uuid
    assert [fake.layout(0), fake.layout(1)] == layouts and fake.commands == []


def test_gpu_check_probes_each_slice_with_its_uuid(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    module = _gpu_check()
    seen_env: list[str] = []

    def fake_run(argv: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen_env.append(env["CUDA_VISIBLE_DEVICES"])
        out = {"via": "libcuda", "count": 1, "devices": [{"name": "NVIDIA A100-PCIE-40GB MIG", "memory_mb": 9728}]}
        return subprocess.CompletedProcess(argv, 0, json.dumps(out) + "\n", "")

    monkeypatch.setattr(module.subprocess, "run", fake_run)
    fake = FakePynvml()
    assert module.main([], pynvml_module=fake) == 0
    expected = [s.uuid for g in read_nvml(fake) for s in g.slices]
    assert seen_env == expected
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(expected[0]) and "sees 1 CUDA device(s)" in line for line in lines)
