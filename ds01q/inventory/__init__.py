"""The GPU inventory: GPUs and their schedulable slices, from NVML or from the config file.

May import only ds01q.types, ds01q.errors, ds01q.mig (profile tables and
naming), the standard library and pynvml.
"""
from __future__ import annotations

from ds01q.inventory.nvml import (
    NO_DRIVER_MESSAGE,
    GpuRecord,
    GpuUsage,
    gpu_compute_slices,
    read_nvml,
    read_utilization,
)
from ds01q.inventory.static import parse_memory_mb, static_inventory

__all__ = [
    "NO_DRIVER_MESSAGE",
    "GpuRecord",
    "GpuUsage",
    "gpu_compute_slices",
    "parse_memory_mb",
    "read_nvml",
    "read_utilization",
    "static_inventory",
]
