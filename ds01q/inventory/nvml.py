"""The GPU inventory from NVML (nvidia-ml-py, module ``pynvml``).

Every GPU becomes a GpuRecord. A GPU with MIG off is one slice of profile
"full"; a GPU with MIG on has one slice per MIG device (GPU instance plus its
compute instance), named the way go-nvlib names them (ds01q.mig.naming).

The pynvml module is a parameter so that tests pass tests/fakes/fake_pynvml.py;
by default the real one is imported when first needed. nvmlShutdown is always
called once nvmlInit succeeded.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from ds01q.errors import InventoryError
from ds01q.mig.naming import profile_name
from ds01q.mig.placement import Instance
from ds01q.mig.profiles import gpu_model
from ds01q.types import FULL_PROFILE, SliceInfo

__all__ = ["NO_DRIVER_MESSAGE", "GpuRecord", "GpuUsage", "read_nvml", "read_utilization", "gpu_compute_slices"]

NO_DRIVER_MESSAGE = (
    "NVIDIA driver not found (libnvidia-ml.so.1): install the driver or set inventory.source: static"
)
_MIB = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GpuRecord:
    """One physical GPU and its schedulable slices."""

    uuid: str
    name: str
    memory_mb: int
    mig_enabled: bool
    index: int
    slices: tuple[SliceInfo, ...]
    utilization: float | None = None  # percent; None where NVML has none (MIG mode, static inventory)
    node: str = "local"
    # Each GPU instance's placement (nvmlGpuInstanceGetInfo: GI id, placement start/size), by slice;
    # empty where NVML does not say (no privileges) or the static inventory declares no starts.
    instances: tuple[Instance, ...] = ()

    @property
    def layout(self) -> list[str]:
        """The current layout in ds01q.mig's convention: ["full"] when MIG is off."""
        if not self.mig_enabled:
            return [FULL_PROFILE]
        return [s.profile for s in self.slices]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"slices": [dataclasses.asdict(s) for s in self.slices]}


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """Point-in-time usage of one GPU; None where NVML does not report the value."""

    uuid: str
    index: int
    utilization: float | None  # percent, whole GPU; NotSupported in MIG mode
    power_w: float | None
    memory_used_mb: int | None
    slice_memory_used_mb: dict[str, int] = field(default_factory=dict)  # MIG uuid -> MiB used


def gpu_compute_slices(name: str) -> int:
    """Compute slices of a whole GPU: 7, or 4 on an A30; 7 for GPUs without a MIG table."""
    model = gpu_model(name)
    return model.compute_slices if model is not None else 7


def _load(pynvml_module: ModuleType | Any | None) -> Any:
    if pynvml_module is not None:
        return pynvml_module
    try:
        import pynvml
    except ImportError:
        raise InventoryError(
            "nvidia-ml-py is not installed (module pynvml): pip install nvidia-ml-py or set inventory.source: static"
        ) from None
    return pynvml


@contextmanager
def _session(N: Any) -> Iterator[None]:
    try:
        N.nvmlInit()
    except (N.NVMLError_LibraryNotFound, N.NVMLError_DriverNotLoaded):
        raise InventoryError(NO_DRIVER_MESSAGE) from None
    except N.NVMLError as e:
        raise InventoryError(f"NVML could not start: {e}") from None
    try:
        yield
    finally:
        try:
            N.nvmlShutdown()
        except N.NVMLError:
            pass


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _optional(N: Any, fn: Callable[[], T]) -> T | None:
    """A value NVML may not offer (NotSupported, NoPermission, ...): None instead of an error."""
    try:
        return fn()
    except N.NVMLError:
        return None


def read_nvml(pynvml_module: ModuleType | Any | None = None, node: str = "local") -> list[GpuRecord]:
    """Every GPU NVML sees, with its slices. Raises InventoryError with one line on any NVML failure."""
    N = _load(pynvml_module)
    with _session(N):
        try:
            count = N.nvmlDeviceGetCount()
        except N.NVMLError as e:
            raise InventoryError(f"NVML could not count GPUs: {e}") from None
        records = []
        for i in range(count):
            try:
                records.append(_read_gpu(N, i, node))
            except N.NVMLError as e:
                raise InventoryError(f"NVML could not read GPU {i}: {e}") from None
        return records


def _mig_enabled(N: Any, handle: Any) -> bool:
    try:
        current, _pending = N.nvmlDeviceGetMigMode(handle)
    except N.NVMLError_NotSupported:
        return False
    return bool(current == N.NVML_DEVICE_MIG_ENABLE)


def _read_gpu(N: Any, index: int, node: str) -> GpuRecord:
    h = N.nvmlDeviceGetHandleByIndex(index)
    uuid, name = _text(N.nvmlDeviceGetUUID(h)), _text(N.nvmlDeviceGetName(h))
    total_bytes = int(N.nvmlDeviceGetMemoryInfo(h).total)
    mig = _mig_enabled(N, h)
    utilization = _optional(N, lambda: float(N.nvmlDeviceGetUtilizationRates(h).gpu))
    gcs = gpu_compute_slices(name)
    instances: tuple[Instance, ...] = ()
    if mig:
        slices = tuple(_read_migs(N, h, uuid, name, total_bytes, gcs, node))
        instances = _read_placements(N, h, slices)
    else:
        slices = (SliceInfo(uuid, uuid, FULL_PROFILE, gcs, gcs, total_bytes // _MIB, node, name),)
    return GpuRecord(uuid, name, total_bytes // _MIB, mig, index, slices, utilization, node, instances)


def _read_placements(N: Any, h: Any, slices: tuple[SliceInfo, ...]) -> tuple[Instance, ...]:
    """GI id and placement of every MIG device, or () when NVML refuses any of them (privileges)."""
    by_uuid = {s.uuid: s for s in slices}
    out: list[Instance] = []
    for j in range(N.nvmlDeviceGetMaxMigDeviceCount(h)):
        try:
            m = N.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
        except N.NVMLError_NotFound:
            continue
        try:
            gi_id = int(N.nvmlDeviceGetGpuInstanceId(m))
            info = N.nvmlGpuInstanceGetInfo(N.nvmlDeviceGetGpuInstanceById(h, gi_id))
        except N.NVMLError:
            return ()
        s = by_uuid.get(_text(N.nvmlDeviceGetUUID(m)))
        if s is not None:
            out.append(Instance(s.profile, int(info.placement.start), int(info.placement.size), gi_id, s.uuid))
    return tuple(sorted(out, key=lambda i: i.start))


def _read_migs(N: Any, h: Any, gpu_uuid: str, gpu_name: str, total_bytes: int, gcs: int,
               node: str) -> Iterator[SliceInfo]:
    suffixes = _MediaSuffixes(N, h)
    for j in range(N.nvmlDeviceGetMaxMigDeviceCount(h)):
        try:
            m = N.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
        except N.NVMLError_NotFound:  # indices are sparse
            continue
        attrs = N.nvmlDeviceGetAttributes(m)
        gi, ci = int(attrs.gpuInstanceSliceCount), int(attrs.computeInstanceSliceCount)
        memory_mb = int(attrs.memorySizeMB)
        profile = profile_name(gi, ci, memory_mb, total_bytes, suffixes.of(m))
        yield SliceInfo(_text(N.nvmlDeviceGetUUID(m)), gpu_uuid, profile, ci or gi, gcs, memory_mb, node, gpu_name)


class _MediaSuffixes:
    """"+me" for GPU instances of a media-extension profile, found through the exact profile ID.

    nvmlDeviceGetGpuInstanceById needs privileges; without them (or on any
    other NVML error) the suffix is "" and the slice keeps its plain name.
    """

    def __init__(self, N: Any, parent: Any) -> None:
        self._N, self._parent = N, parent
        self._index_by_id: dict[int, int] | None = None
        self._suffix_by_index = {
            getattr(N, "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1", 0x7): "+me",
            getattr(N, "NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1", 0x8): "+me",
            getattr(N, "NVML_GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME", 0xF): "+me.all",
            getattr(N, "NVML_GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME", 0x10): "+me.all",
            getattr(N, "NVML_GPU_INSTANCE_PROFILE_1_SLICE_NO_ME", 0xD): "-me",
            getattr(N, "NVML_GPU_INSTANCE_PROFILE_2_SLICE_NO_ME", 0xE): "-me",
        }

    def of(self, mig_handle: Any) -> str:
        N = self._N
        try:
            gi = N.nvmlDeviceGetGpuInstanceById(self._parent, N.nvmlDeviceGetGpuInstanceId(mig_handle))
            profile_id = int(N.nvmlGpuInstanceGetInfo(gi).profileId)
        except N.NVMLError:
            return ""
        index = self._indices().get(profile_id)
        return "" if index is None else self._suffix_by_index.get(index, "")

    def _indices(self) -> dict[int, int]:
        if self._index_by_id is None:
            N, found = self._N, {}
            for k in range(getattr(N, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0x12)):
                info = _optional(N, lambda k=k: N.nvmlDeviceGetGpuInstanceProfileInfo(self._parent, k))
                if info is not None:
                    found.setdefault(int(info.id), k)
            self._index_by_id = found
        return self._index_by_id


def read_utilization(pynvml_module: ModuleType | Any | None = None) -> list[GpuUsage]:
    """Utilisation, power and memory use of every GPU, for accounting; None where unsupported."""
    N = _load(pynvml_module)
    with _session(N):
        try:
            return [_usage(N, i) for i in range(N.nvmlDeviceGetCount())]
        except N.NVMLError as e:
            raise InventoryError(f"NVML could not read GPU usage: {e}") from None


def _usage(N: Any, index: int) -> GpuUsage:
    h = N.nvmlDeviceGetHandleByIndex(index)
    uuid = _text(N.nvmlDeviceGetUUID(h))
    util = _optional(N, lambda: float(N.nvmlDeviceGetUtilizationRates(h).gpu))
    power = _optional(N, lambda: N.nvmlDeviceGetPowerUsage(h) / 1000.0)  # milliwatts
    used = _optional(N, lambda: int(N.nvmlDeviceGetMemoryInfo(h).used) // _MIB)
    per_slice: dict[str, int] = {}
    if _mig_enabled(N, h):
        for j in range(N.nvmlDeviceGetMaxMigDeviceCount(h)):
            try:
                m = N.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
            except N.NVMLError_NotFound:
                continue
            mig_used = _optional(N, lambda m=m: int(N.nvmlDeviceGetMemoryInfo(m).used) // _MIB)
            if mig_used is not None:
                per_slice[_text(N.nvmlDeviceGetUUID(m))] = mig_used
    return GpuUsage(uuid, index, util, power, used, per_slice)
