"""An inventory declared in the config file (``inventory.source: static``): dev, CI, demos.

    inventory:
      gpus:
        - uuid: GPU-00000000-0000-0000-0000-000000000001
          name: NVIDIA A100-PCIE-40GB
          mig:                          # absent: MIG off, one whole-GPU slice
            - {uuid: MIG-00000000-0000-0000-0000-000000000011, profile: 2g.10gb}
        - uuid: GPU-00000000-0000-0000-0000-000000000002
          name: Some GPU without a MIG table
          memory: 24g                   # needed only where the name is unknown
          node: gpu02                   # optional; default: the node reading the config

Memory comes from the profile table (ds01q.mig.profiles). For a GPU name
without a table, a whole GPU has 7 compute slices and ``memory`` (MiB as an
integer, or a size such as "24g"/"24576m"), else the "<N>GB" in its name, else 0.
Every error is a ConfigError naming the key path.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ds01q.errors import ConfigError
from ds01q.inventory.nvml import GpuRecord
from ds01q.mig.placement import Instance, legal_placements
from ds01q.mig.profiles import GpuModel, compute_slices_for, gpu_model, is_valid_layout
from ds01q.types import FULL_PROFILE, SliceInfo

__all__ = ["static_inventory", "parse_memory_mb"]

_PATH = "inventory.gpus"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_NAME_GB_RE = re.compile(r"(\d+)\s*GB", re.IGNORECASE)
_UNIT_MB = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}


def parse_memory_mb(value: object, path: str) -> int:
    """MiB from an int (MiB) or a size string: "512m", "40g", "40GiB", "1t"."""
    if isinstance(value, bool):
        raise ConfigError(f"{path}: expected a size such as 40g or 40960m, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{path}: must not be negative, got {value}")
        return value
    m = _SIZE_RE.match(str(value)) if isinstance(value, str) else None
    if m is None:
        raise ConfigError(f"{path}: expected a size such as 40g or 40960m, got {value!r}")
    return int(float(m.group(1)) * _UNIT_MB[m.group(2).lower()])


def static_inventory(gpus: Sequence[Mapping[str, Any]] | None, node: str = "local") -> list[GpuRecord]:
    """GpuRecords for the configured GPUs; raises ConfigError naming the bad key."""
    if gpus is None:
        return []
    if not isinstance(gpus, Sequence) or isinstance(gpus, (str, bytes)):
        raise ConfigError(f"{_PATH}: expected a list of GPUs, got {type(gpus).__name__}")
    seen: dict[str, str] = {}
    return [_gpu(entry, i, node, seen) for i, entry in enumerate(gpus)]


def _uuid(value: object, path: str, seen: dict[str, str]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: required, a non-empty string")
    if value in seen:
        raise ConfigError(f"{path}: duplicate uuid {value!r} (also at {seen[value]})")
    seen[value] = path
    return value


def _gpu(entry: object, i: int, node: str, seen: dict[str, str]) -> GpuRecord:
    path = f"{_PATH}[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{path}: expected a mapping with uuid, name and optional mig")
    unknown = sorted(set(entry) - {"uuid", "name", "mig", "memory", "node"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (allowed: uuid, name, mig, memory, node)")
    uuid = _uuid(entry.get("uuid"), f"{path}.uuid", seen)
    node = entry.get("node", node)
    if not isinstance(node, str) or not node:
        raise ConfigError(f"{path}.node: expected a node name, got {node!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{path}.name: required, the NVML name such as 'NVIDIA A100-PCIE-40GB'")
    model = gpu_model(name)
    memory_mb = _gpu_memory(entry, model, name, path)
    gcs = model.compute_slices if model is not None else 7
    mig = entry.get("mig")
    if mig is None:
        full = SliceInfo(uuid, uuid, FULL_PROFILE, gcs, gcs, memory_mb, node, name)
        return GpuRecord(uuid, name, memory_mb, False, i, (full,), None, node)
    if not isinstance(mig, Sequence) or isinstance(mig, (str, bytes)):
        raise ConfigError(f"{path}.mig: expected a list of {{uuid, profile}}")
    slices = tuple(_mig(item, f"{path}.mig[{j}]", uuid, name, model, gcs, memory_mb, node, seen)
                   for j, item in enumerate(mig))
    layout = [s.profile for s in slices]
    if model is not None and not is_valid_layout(model, layout):
        raise ConfigError(f"{path}.mig: {', '.join(layout)} do not fit together on one {name}")
    instances = _declared_starts(mig, slices, model, f"{path}.mig")
    return GpuRecord(uuid, name, memory_mb, True, i, slices, None, node, instances)


def _declared_starts(items: Sequence[Any], slices: Sequence[SliceInfo], model: GpuModel | None,
                     path: str) -> tuple[Instance, ...]:
    """The instances whose ``start`` the config declares (all or none), checked against the placement table."""
    starts = [item.get("start") for item in items]
    if all(s is None for s in starts):
        return ()
    if model is None or any(s is None for s in starts):
        raise ConfigError(f"{path}: give start for every instance of a known MIG GPU, or for none")
    out: list[Instance] = []
    used: set[int] = set()
    for j, (start, s) in enumerate(zip(starts, slices, strict=True)):
        legal = legal_placements(model, s.profile)
        if isinstance(start, bool) or not isinstance(start, int) or start not in [a for a, _ in legal]:
            allowed = ", ".join(str(a) for a, _ in legal)
            raise ConfigError(f"{path}[{j}].start: {start!r} is not a start of {s.profile} (allowed: {allowed})")
        size = dict(legal)[start]
        span = set(range(start, start + size))
        if span & used:
            raise ConfigError(f"{path}[{j}].start: {s.profile} at {start} overlaps another instance")
        used |= span
        out.append(Instance(s.profile, start, size, None, s.uuid))
    return tuple(out)


def _gpu_memory(entry: Mapping[str, Any], model: GpuModel | None, name: str, path: str) -> int:
    if "memory" in entry:
        return parse_memory_mb(entry["memory"], f"{path}.memory")
    if model is not None:
        return model.memory_mb
    m = _NAME_GB_RE.search(name)
    return int(m.group(1)) * 1024 if m else 0


def _mig(item: object, path: str, gpu_uuid: str, gpu_name: str, model: GpuModel | None, gcs: int,
         gpu_memory_mb: int, node: str, seen: dict[str, str]) -> SliceInfo:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{path}: expected a mapping {{uuid, profile}}")
    unknown = sorted(set(item) - {"uuid", "profile", "start"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (allowed: uuid, profile, start)")
    uuid = _uuid(item.get("uuid"), f"{path}.uuid", seen)
    profile = item.get("profile")
    if model is not None:
        p = model.profile(profile) if isinstance(profile, str) else None
        if p is None:
            allowed = ", ".join(model.profile_names)
            raise ConfigError(f"{path}.profile: {profile!r} is not a profile of {gpu_name} (allowed: {allowed})")
        return SliceInfo(uuid, gpu_uuid, p.name, p.compute_slices, gcs, p.memory_mb, node, gpu_name)
    if not isinstance(profile, str) or profile == FULL_PROFILE or not re.match(r"^(\d+c\.)?\d+g\.\d+gb", profile):
        raise ConfigError(f"{path}.profile: {profile!r} is not a MIG profile name (expected e.g. 2g.10gb)")
    memory_gb = int(re.search(r"(\d+)gb", profile).group(1))  # type: ignore[union-attr]
    memory_mb = min(memory_gb * 1024, gpu_memory_mb) if gpu_memory_mb else memory_gb * 1024
    return SliceInfo(uuid, gpu_uuid, profile, compute_slices_for(profile, gcs), gcs, memory_mb, node, gpu_name)
