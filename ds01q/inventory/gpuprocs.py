"""Processes on each GPU or MIG slice, from NVML's running-process lists (no database, no engine)."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ds01q.errors import InventoryError
from ds01q.inventory.nvml import _load, _mig_enabled, _session, _text


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    gpu_uuid: str
    slice_uuid: str  # the MIG device's UUID, or the GPU's for a whole GPU
    used_mb: int | None


def _procs(N: Any, handle: Any) -> list[Any]:
    out: list[Any] = []
    for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            out.extend(getattr(N, fn)(handle))
        except (AttributeError, N.NVMLError):
            continue
    return out


def _entry(p: Any, gpu_uuid: str, slice_uuid: str) -> GpuProcess:
    used = getattr(p, "usedGpuMemory", None)
    return GpuProcess(pid=int(p.pid), gpu_uuid=gpu_uuid, slice_uuid=slice_uuid,
                      used_mb=int(used) // (1024 * 1024) if isinstance(used, int) else None)


def read_gpu_processes(pynvml_module: ModuleType | Any | None = None) -> list[GpuProcess]:
    """Every process NVML lists on a GPU or MIG slice; InventoryError with one line on failure."""
    N = _load(pynvml_module)
    out: list[GpuProcess] = []
    with _session(N):
        try:
            for i in range(N.nvmlDeviceGetCount()):
                h = N.nvmlDeviceGetHandleByIndex(i)
                gpu_uuid = _text(N.nvmlDeviceGetUUID(h))
                if not _mig_enabled(N, h):
                    out.extend(_entry(p, gpu_uuid, gpu_uuid) for p in _procs(N, h))
                    continue
                for slot in range(N.nvmlDeviceGetMaxMigDeviceCount(h)):
                    try:
                        mh = N.nvmlDeviceGetMigDeviceHandleByIndex(h, slot)
                    except N.NVMLError:
                        continue
                    mig_uuid = _text(N.nvmlDeviceGetUUID(mh))
                    out.extend(_entry(p, gpu_uuid, mig_uuid) for p in _procs(N, mh))
        except N.NVMLError as e:
            raise InventoryError(f"NVML could not list GPU processes: {e}") from None
    seen: set[tuple[int, str]] = set()
    return [p for p in out if (p.pid, p.slice_uuid) not in seen and not seen.add((p.pid, p.slice_uuid))]  # type: ignore[func-returns-value]
