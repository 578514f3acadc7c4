"""A fake ``pynvml`` (nvidia-ml-py) module: the only sanctioned fake of GPU hardware.

It replaces pynvml at the module boundary: pass it as ``pynvml_module=`` or put
it in ``sys.modules["pynvml"]``. It offers the real module's function names,
its constants and its exception classes (the very ``pynvml.NVMLError_*``
classes, so ``except pynvml.NVMLError_NotFound`` works against either), and it
returns the real ctypes structures (c_nvmlMemory_t, c_nvmlDeviceAttributes, ...).

Seeded with real figures:
  * NVIDIA A100-PCIE-40GB: total 42949672960 bytes (40960 MiB); MIG instances
    1g.5gb 4864 MiB, 1g.10gb 9856, 2g.10gb 9984, 3g.20gb 19968, 4g.20gb 19968,
    7g.40gb 40192 (published nvidia-smi -lgip / NVML figures).
  * NVIDIA H100 80GB HBM3: total 81559 MiB (85520809984 bytes, as nvidia-smi
    reports it); 1g.10gb 9856 MiB. The other H100 instance sizes are derived:
    they are chosen so that NVML's naming rule yields the profile's name.
  The figures live in ds01q.mig.profiles (Profile.memory_mb, GpuModel.memory_mb).

Behaviour modelled on the documentation (tests/unit check the ds01q side):
  * MIG device indices are sparse (a MIG device sits at the index of its first
    memory slice); nvmlDeviceGetMigDeviceHandleByIndex raises NotFound elsewhere.
  * Utilisation is NotSupported on MIG-enabled GPUs and on MIG handles;
    nvmlDeviceGetAttributes supports MIG handles only.
  * nvmlDeviceGetGpuInstanceById needs privileges (``privileged=False`` -> NoPermission).
  * Calls before nvmlInit raise Uninitialized; ``no_driver()`` makes nvmlInit
    raise LibraryNotFound (or DriverNotLoaded).
  * ``set_layout`` reconfigures a GPU at runtime; new instances get new UUIDs.
  * ``nvidia_smi(argv)`` emulates the nvidia-smi MIG commands ds01q issues
    (-mig 0/1, mig -dci, -dgi, -cgi ... -C) against the same state. Like the
    driver (MIG guide example: -cgi 19,14,5 lands at 6:1, 4:2, 0:4) it puts each
    new GPU instance at the highest free valid start, so creating small
    instances first can fail with "Insufficient Resources".
"""
from __future__ import annotations

import random
import subprocess
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pynvml as _real

from ds01q.mig.profiles import GpuModel, Profile, gpu_model, place_layout

MIB = 1 << 20

DEFAULT_GPUS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("NVIDIA A100-PCIE-40GB", ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb")),
    ("NVIDIA H100 80GB HBM3", ("full",)),
)


def _mirror_real_module(target: types.ModuleType) -> None:
    for name in dir(_real):
        if name.startswith(("NVML_", "NVMLError")) or name.startswith("c_nvml") or name == "nvmlExceptionClass":
            setattr(target, name, getattr(_real, name))


@dataclass
class FakeMig:
    uuid: str
    gi_id: int
    profile: Profile
    start: int
    ci_slices: int
    has_ci: bool = True
    ci_id: int = 0
    memory_used_mb: int = 0
    busy: bool = False  # a process runs on it: destroying it fails with "In use by another client"


@dataclass
class FakeGpu:
    index: int
    uuid: str
    name: str
    model: GpuModel | None
    total_mb: int
    mig_enabled: bool = False
    migs: dict[int, FakeMig] = field(default_factory=dict)  # MIG device index -> instance
    utilization: int = 0
    power_mw: int = 60000
    memory_used_mb: int = 0
    lost: bool = False
    busy: bool = False  # processes running: destroy and mode changes fail with "In use"
    next_gi_id: int = 1

    @property
    def sms_per_slice(self) -> int:
        return 16 if self.model is not None and self.model.key.startswith(("H100", "H200")) else 14


@dataclass(frozen=True)
class _Handle:
    gpu: int
    slot: int | None = None  # MIG device index; None for the physical GPU
    gi_id: int | None = None  # set on GPU instance handles

    def __repr__(self) -> str:
        return f"<fake nvmlDevice gpu={self.gpu} mig={self.slot} gi={self.gi_id}>"


class FakePynvml(types.ModuleType):
    """See the module docstring. ``gpus``: (name, layout) pairs or dicts {name, layout, memory_mb}."""

    def __init__(self, gpus: Iterable[Sequence[Any] | Mapping[str, Any]] | None = None, *, seed: int = 0,
                 privileged: bool = True) -> None:
        super().__init__("pynvml", "fake nvidia-ml-py (tests/fakes/fake_pynvml.py)")
        _mirror_real_module(self)
        self._rng = random.Random(seed)
        self.privileged = privileged
        self.init_count = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        self.commands: list[list[str]] = []  # every argv given to nvidia_smi
        self._no_driver: type[BaseException] | None = None
        self.gpus: list[FakeGpu] = []
        self.processes: list[tuple[int, int | None, int, int]] = []  # (gpu, MIG slot, pid, used MB)
        for spec in DEFAULT_GPUS if gpus is None else gpus:
            self.add_gpu(spec)

    # ------------------------------------------------------------------ test controls
    def _uuid(self, prefix: str) -> str:
        h = "%032x" % self._rng.getrandbits(128)
        return f"{prefix}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def add_gpu(self, spec: Sequence[Any] | Mapping[str, Any]) -> FakeGpu:
        if isinstance(spec, Mapping):
            name, layout, memory_mb = spec["name"], spec.get("layout", ("full",)), spec.get("memory_mb")
        else:
            name, layout, memory_mb = spec[0], spec[1], None
        model = gpu_model(name)
        if memory_mb is None:
            if model is None:
                raise ValueError(f"fake GPU {name!r} has no MIG table: give memory_mb")
            memory_mb = model.memory_mb
        gpu = FakeGpu(len(self.gpus), self._uuid("GPU"), name, model, int(memory_mb))
        self.gpus.append(gpu)
        self.set_layout(gpu.index, list(layout))
        return gpu

    def set_layout(self, gpu_index: int, layout: Sequence[str]) -> list[str]:
        """Reconfigure a GPU: ["full"] = MIG off; otherwise GI profiles, optionally "Nc."-prefixed
        (one compute instance of N slices). Returns the new MIG UUIDs."""
        gpu = self.gpus[gpu_index]
        gpu.migs = {}
        if list(layout) == ["full"]:
            gpu.mig_enabled = False
            return []
        if gpu.model is None:
            raise ValueError(f"{gpu.name} does not support MIG")
        gis, cis = [], []
        for entry in layout:
            ci, _, gi = entry.partition("c.") if "c." in entry else ("", "", entry)
            gis.append(gi)
            cis.append(int(ci) if ci else None)
        placed = place_layout(gpu.model, gis)
        if placed is None:
            raise ValueError(f"layout {list(layout)} does not fit on {gpu.name}")
        gpu.mig_enabled = True
        ci_by_profile: dict[str, list[int | None]] = {}
        for gi, ci in zip(gis, cis, strict=True):
            ci_by_profile.setdefault(gi, []).append(ci)
        # where the driver would put them (largest first, each at the highest free start);
        # place_layout's assignment if that order cannot place them
        profiles = [gpu.model.profile(name) for name, _ in placed]
        starts: list[int | None] = []
        for p in profiles:
            assert p is not None
            starts.append(self._last_fit(gpu, p))
            if starts[-1] is None:
                break
            gpu.migs[starts[-1]] = FakeMig("", 0, p, starts[-1], p.compute_slices)  # trial placement
        gpu.migs = {}
        if None in starts:
            starts = [start for _, start in placed]
        for p, start in zip(profiles, starts, strict=True):
            assert p is not None and start is not None
            ci = ci_by_profile[p.name].pop(0)
            self._create(gpu, p, start, ci if ci is not None else p.compute_slices)
        return [m.uuid for m in gpu.migs.values()]

    def _create(self, gpu: FakeGpu, profile: Profile, start: int, ci_slices: int, has_ci: bool = True) -> FakeMig:
        mig = FakeMig(self._uuid("MIG"), gpu.next_gi_id, profile, start, ci_slices, has_ci)
        gpu.next_gi_id += 1
        gpu.migs[start] = mig
        return mig

    def layout(self, gpu_index: int) -> list[str]:
        gpu = self.gpus[gpu_index]
        if not gpu.mig_enabled:
            return ["full"]
        return sorted(m.profile.name for m in gpu.migs.values())

    def no_driver(self, loaded_library: bool = False) -> None:
        """Make nvmlInit fail: LibraryNotFound, or DriverNotLoaded when the library exists."""
        self._no_driver = _real.NVMLError_DriverNotLoaded if loaded_library else _real.NVMLError_LibraryNotFound

    def lose_gpu(self, gpu_index: int) -> None:
        """The GPU "falls off the bus": every call on it raises GpuIsLost."""
        self.gpus[gpu_index].lost = True

    def set_busy(self, gpu_index: int, busy: bool = True) -> None:
        self.gpus[gpu_index].busy = busy

    def set_instance_busy(self, mig_uuid: str, busy: bool = True) -> None:
        """A process starts (or stops) on one MIG device: destroying its instance fails while busy."""
        for gpu in self.gpus:
            for m in gpu.migs.values():
                if m.uuid == mig_uuid:
                    m.busy = busy
                    return
        raise KeyError(mig_uuid)

    def instances(self, gpu_index: int) -> list[tuple[str, int, str]]:
        """(profile, start, uuid) of every GPU instance of a GPU, by start."""
        return [(m.profile.name, m.start, m.uuid) for _, m in sorted(self.gpus[gpu_index].migs.items())]

    # ------------------------------------------------------------------ helpers
    def _check_init(self) -> None:
        if self.init_count <= 0:
            raise _real.NVMLError_Uninitialized()

    def _gpu(self, handle: Any) -> FakeGpu:
        self._check_init()
        if not isinstance(handle, _Handle) or not 0 <= handle.gpu < len(self.gpus):
            raise _real.NVMLError_InvalidArgument()
        gpu = self.gpus[handle.gpu]
        if gpu.lost:
            raise _real.NVMLError_GpuIsLost()
        return gpu

    def _mig(self, handle: Any) -> tuple[FakeGpu, FakeMig]:
        gpu = self._gpu(handle)
        mig = gpu.migs.get(handle.slot) if handle.slot is not None else None
        if mig is None or not mig.has_ci:
            raise _real.NVMLError_InvalidArgument()
        return gpu, mig

    # ------------------------------------------------------------------ pynvml API
    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self._no_driver is not None:
            raise self._no_driver()
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._check_init()
        self.init_count -= 1
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise _real.NVMLError_InvalidArgument()
        return self._checked(_Handle(index))

    def _checked(self, handle: _Handle) -> _Handle:
        self._gpu(handle)
        return handle

    def nvmlDeviceGetIndex(self, handle: _Handle) -> int:
        return self._gpu(handle).index

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        if handle.slot is not None:
            return self._mig(handle)[1].uuid
        return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        if handle.slot is not None:
            gpu, mig = self._mig(handle)
            return f"{gpu.name} MIG {mig.profile.name}"
        return self._gpu(handle).name

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> Any:
        if handle.slot is not None:
            _gpu, mig = self._mig(handle)
            total, used = mig.profile.memory_mb * MIB, mig.memory_used_mb * MIB
        else:
            gpu = self._gpu(handle)
            total, used = gpu.total_mb * MIB, gpu.memory_used_mb * MIB
        return _real.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        gpu = self._gpu(handle)
        if handle.slot is not None or gpu.model is None:
            raise _real.NVMLError_NotSupported()
        mode = _real.NVML_DEVICE_MIG_ENABLE if gpu.mig_enabled else _real.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        if gpu.model is None or not gpu.mig_enabled:
            return 0
        return gpu.model.compute_slices

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        gpu = self._gpu(handle)
        if not 0 <= index < self.nvmlDeviceGetMaxMigDeviceCount(handle):
            raise _real.NVMLError_InvalidArgument()
        mig = gpu.migs.get(index)
        if mig is None or not mig.has_ci:
            raise _real.NVMLError_NotFound()
        return _Handle(handle.gpu, index)

    def nvmlDeviceIsMigDeviceHandle(self, handle: _Handle) -> Any:
        self._gpu(handle)
        return _real.c_uint(1 if handle.slot is not None else 0)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: _Handle) -> _Handle:
        self._mig(handle)
        return _Handle(handle.gpu)

    def nvmlDeviceGetGpuInstanceId(self, handle: _Handle) -> int:
        return self._mig(handle)[1].gi_id

    def nvmlDeviceGetComputeInstanceId(self, handle: _Handle) -> int:
        return self._mig(handle)[1].ci_id

    def nvmlDeviceGetAttributes(self, handle: _Handle) -> Any:
        if handle.slot is None:
            self._gpu(handle)
            raise _real.NVMLError_NotSupported()  # nvml.h: "only supports MIG device handles"
        gpu, mig = self._mig(handle)
        p = mig.profile
        return _real.c_nvmlDeviceAttributes(
            multiprocessorCount=mig.ci_slices * gpu.sms_per_slice,
            sharedCopyEngineCount=p.compute_slices,
            sharedDecoderCount=max(1, p.compute_slices // 2),
            sharedEncoderCount=0,
            sharedJpegCount=1 if p.media_extensions else 0,
            sharedOfaCount=1 if p.media_extensions else 0,
            gpuInstanceSliceCount=p.compute_slices,
            computeInstanceSliceCount=mig.ci_slices,
            memorySizeMB=p.memory_mb,
        )

    nvmlDeviceGetAttributes_v2 = nvmlDeviceGetAttributes

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: _Handle, profile: int, version: int = 2) -> Any:
        gpu = self._gpu(handle)
        if not 0 <= profile < _real.NVML_GPU_INSTANCE_PROFILE_COUNT:
            raise _real.NVMLError_InvalidArgument()
        p = next((p for p in gpu.model.profiles if p.nvml_index == profile), None) if gpu.model else None
        if p is None:
            raise _real.NVMLError_NotSupported()
        info = _real.c_nvmlGpuInstanceProfileInfo_v2_t()
        info.id, info.sliceCount, info.instanceCount = p.profile_id, p.compute_slices, p.max_count
        info.multiprocessorCount = p.compute_slices * gpu.sms_per_slice
        info.memorySizeMB = p.memory_mb
        info.name = f"MIG {p.name}".encode()
        return info

    def nvmlDeviceGetGpuInstanceById(self, handle: _Handle, gpu_instance_id: int) -> _Handle:
        gpu = self._gpu(handle)
        if not self.privileged:
            raise _real.NVMLError_NoPermission()
        if not any(m.gi_id == gpu_instance_id for m in gpu.migs.values()):
            raise _real.NVMLError_NotFound()
        return _Handle(handle.gpu, None, gpu_instance_id)

    def nvmlGpuInstanceGetInfo(self, gpu_instance: _Handle) -> Any:
        gpu = self._gpu(gpu_instance)
        mig = next((m for m in gpu.migs.values() if m.gi_id == gpu_instance.gi_id), None)
        if mig is None:
            raise _real.NVMLError_InvalidArgument()
        info = _real.c_nvmlGpuInstanceInfo_t()
        info.id, info.profileId = mig.gi_id, mig.profile.profile_id
        info.placement.start, info.placement.size = mig.start, mig.profile.memory_slices
        return info

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        gpu = self._gpu(handle)
        if handle.slot is not None or gpu.mig_enabled:
            raise _real.NVMLError_NotSupported()
        return _real.c_nvmlUtilization_t(gpu=gpu.utilization, memory=0)

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        if handle.slot is not None:
            raise _real.NVMLError_NotSupported()
        return gpu.power_mw

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        """The pids given to ``run_process`` on this GPU (whole GPU) or this MIG device."""
        self._gpu(handle)
        out = []
        for gpu, slot, pid, used_mb in self.processes:
            if gpu == handle.gpu and slot == handle.slot:
                info = _real.c_nvmlProcessInfo_t()
                info.pid, info.usedGpuMemory = pid, used_mb * 1024 * 1024
                out.append(info)
        return out

    def run_process(self, gpu: int, pid: int, slot: int | None = None, used_mb: int = 100) -> None:
        """Make NVML list ``pid`` on GPU ``gpu`` (or its MIG device index ``slot``)."""
        self.processes.append((gpu, slot, pid, used_mb))

    # ------------------------------------------------------------------ nvidia-smi
    def nvidia_smi(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run one nvidia-smi command against the fake state (a runner for MigController)."""
        argv = list(argv)
        self.commands.append(argv)
        out: list[str] = []
        try:
            self._smi(argv, out)
        except _SmiError as e:
            return subprocess.CompletedProcess(argv, e.code, "\n".join(out), str(e))
        return subprocess.CompletedProcess(argv, 0, "\n".join(out), "")

    def _smi(self, argv: list[str], out: list[str]) -> None:
        if argv[:1] != ["nvidia-smi"]:
            raise _SmiError(127, f"{argv[0] if argv else ''}: command not found")
        args = argv[1:]
        if len(args) == 4 and args[0] == "-i" and args[2] == "-mig" and args[3] in ("0", "1"):
            return self._smi_mode(self._smi_gpu(args[1]), args[3] == "1", out)
        if len(args) >= 4 and args[0] == "mig" and args[1] == "-i":
            gpu = self._smi_gpu(args[2])
            rest = args[3:]
            gi: int | None = None
            if len(rest) >= 3 and rest[0] == "-gi":  # one GPU instance: mig -i N -gi ID -dci|-dgi
                if not rest[1].isdigit():
                    raise _SmiError(2, f"Invalid GPU instance ID {rest[1]}")
                gi, rest = int(rest[1]), rest[2:]
                if rest not in (["-dci"], ["-dgi"]):
                    raise _SmiError(2, f"fake nvidia-smi: unsupported arguments: {' '.join(args)}")
            if not gpu.mig_enabled:
                raise _SmiError(6, f"Unable to run MIG command on GPU {gpu.index}: MIG mode not enabled")
            if rest == ["-dci"]:
                return self._smi_destroy(gpu, compute=True, out=out, gi=gi)
            if rest == ["-dgi"]:
                return self._smi_destroy(gpu, compute=False, out=out, gi=gi)
            if len(rest) in (2, 3) and rest[0] == "-cgi" and rest[2:] in ([], ["-C"]):
                return self._smi_create(gpu, rest[1].split(","), rest[2:] == ["-C"], out)
        raise _SmiError(2, f"fake nvidia-smi: unsupported arguments: {' '.join(args)}")

    def _smi_gpu(self, text: str) -> FakeGpu:
        if not text.isdigit() or int(text) >= len(self.gpus):
            raise _SmiError(6, f"No GPU found with index {text}")
        gpu = self.gpus[int(text)]
        if gpu.lost:
            raise _SmiError(15, f"Unable to determine the device handle for GPU {gpu.index}: GPU is lost")
        return gpu

    def _smi_mode(self, gpu: FakeGpu, enable: bool, out: list[str]) -> None:
        if gpu.model is None:
            raise _SmiError(3, f"Unable to set MIG mode for GPU {gpu.index}: Not Supported")
        if gpu.busy or (not enable and gpu.migs):
            raise _SmiError(19, f"Unable to {'enable' if enable else 'disable'} MIG Mode for GPU {gpu.index}: "
                                "In use by another client")
        gpu.mig_enabled = enable
        gpu.migs = {} if not enable else gpu.migs
        out.append(f"{'Enabled' if enable else 'Disabled'} MIG Mode for GPU {gpu.index}\nAll done.")

    def _smi_destroy(self, gpu: FakeGpu, compute: bool, out: list[str], gi: int | None = None) -> None:
        kind = "compute" if compute else "GPU"
        targets = [m for m in gpu.migs.values() if m.has_ci] if compute else list(gpu.migs.values())
        if gi is not None:
            targets = [m for m in targets if m.gi_id == gi]
        if not targets:
            raise _SmiError(6, f"No {kind} instances found: Not Found")
        if gpu.busy or any(m.busy for m in targets) or (not compute and any(m.has_ci for m in targets)):
            raise _SmiError(19, f"Unable to destroy {kind} instance on GPU {gpu.index}: In use by another client")
        for m in targets:
            if compute:
                m.has_ci = False
                out.append(f"Successfully destroyed compute instance ID {m.ci_id} from GPU {gpu.index} "
                           f"GPU instance ID {m.gi_id}")
            else:
                out.append(f"Successfully destroyed GPU instance ID {m.gi_id} from GPU {gpu.index}")
        if not compute:
            gpu.migs = {k: m for k, m in gpu.migs.items() if m not in targets}

    def _smi_create(self, gpu: FakeGpu, tokens: list[str], with_ci: bool, out: list[str]) -> None:
        model = gpu.model
        assert model is not None
        for token in tokens:
            p = model.profile_by_id(int(token)) if token.isdigit() else model.profile(token)
            if p is None:
                raise _SmiError(2, f"Unable to create a GPU instance on GPU {gpu.index} using profile {token}: "
                                   "Invalid Argument")
            start = self._last_fit(gpu, p)
            if start is None:
                raise _SmiError(23, f"Unable to create a GPU instance on GPU {gpu.index} using profile {token}: "
                                    "Insufficient Resources")
            mig = self._create(gpu, p, start, p.compute_slices, has_ci=with_ci)
            out.append(f"Successfully created GPU instance ID {mig.gi_id} on GPU {gpu.index} "
                       f"using profile MIG {p.name} (ID {p.profile_id})")
            if with_ci:
                out.append(f"Successfully created compute instance ID 0 on GPU {gpu.index} "
                           f"GPU instance ID {mig.gi_id} using profile MIG {p.name} (ID 0)")

    @staticmethod
    def _last_fit(gpu: FakeGpu, p: Profile) -> int | None:
        model = gpu.model
        assert model is not None
        existing = list(gpu.migs.values())
        if sum(1 for m in existing if m.profile == p) >= p.max_count:
            return None
        if p.media_extensions and any(m.profile.media_extensions for m in existing):
            return None
        if sum(m.profile.compute_slices for m in existing) + p.compute_slices > model.compute_slices:
            return None
        used = {k for m in existing for k in range(m.start, m.start + m.profile.memory_slices)}
        for start in sorted(p.starts, reverse=True):
            span = set(range(start, start + p.memory_slices))
            if max(span) < model.memory_slices and not span & used:
                return start
        return None


class _SmiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
