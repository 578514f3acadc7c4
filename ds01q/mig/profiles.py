"""MIG placement tables: which GPU instance profiles a GPU offers and where they fit.

A MIG GPU has 8 memory slices and 7 compute slices (A30: 4 and 4). A GPU
instance (GI) occupies ``memory_slices`` consecutive memory slices starting at
one of its profile's valid ``starts`` and takes ``compute_slices`` compute
slices; instances may not overlap in memory and their compute slices may not
exceed the GPU's. A layout is a list of profile names, e.g.
``["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]``.

Sources (see shared/docs/gpu-mig-docker-facts.md, section 1):
  * A100-40GB: profiles, IDs, counts and placements from the MIG user guide.
  * A100-80GB, H100: names and counts from the guide; IDs and placements as on
    the A100-40GB (IDs confirmed by published ``nvidia-smi mig -lgip`` output).
  * H100 NVL (94 GB): published ``nvidia-smi -L``/``-cgi`` output shows
    ``1g.12gb`` with ID 19; the other names follow from NVML's naming rule.
  * A30: IDs 14/21/5/6/0 from published ``-lgip`` output; placements from the
    go-nvml mock data.
  * H200: every figure (IDs, counts, memory, placements) as NVML reported it on
    a real H200, driver 580.159.04 (bench/nvml_probe.py; the readings are kept in
    tests/fixtures/nvml/ and tests/unit/test_mig_profiles.py checks the table
    against them).
  * ``memory_mb`` is the instance memory (``memorySizeMB``) as reported by
    ``-lgip``/NVML where published or read; H100 and H100 NVL figures are derived
    so that NVML's naming rule gives the profile's name (see naming.py and
    tests/unit/test_mig_profiles.py, which checks every figure that way).

Every GPU has one set of media engines (JPEG/OFA), so a layout holds at most
one ``+me`` profile.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ds01q.errors import RequestError
from ds01q.types import FULL_PROFILE

__all__ = [
    "Profile",
    "GpuModel",
    "MODELS",
    "gpu_model",
    "require_model",
    "is_valid_layout",
    "place_layout",
    "possible_profiles",
    "compute_slices_for",
    "is_full_layout",
    "valid_layouts",
]

# Indices of nvmlDeviceGetGpuInstanceProfileInfo (NVML_GPU_INSTANCE_PROFILE_*).
_NVML_1_SLICE, _NVML_2_SLICE, _NVML_3_SLICE, _NVML_4_SLICE, _NVML_7_SLICE = 0x0, 0x1, 0x2, 0x3, 0x4
_NVML_1_SLICE_REV1, _NVML_2_SLICE_REV1, _NVML_1_SLICE_REV2 = 0x7, 0x8, 0x9


@dataclass(frozen=True, slots=True)
class Profile:
    """One GPU instance profile of one GPU model."""

    name: str  # "2g.10gb"
    profile_id: int  # the ID nvidia-smi takes in -cgi (14)
    compute_slices: int
    memory_slices: int
    max_count: int
    starts: tuple[int, ...]  # valid first memory slice
    memory_gb: int  # the "10" in 2g.10gb
    memory_mb: int  # instance memory in MiB (nvmlDeviceGetAttributes().memorySizeMB)
    nvml_index: int  # NVML_GPU_INSTANCE_PROFILE_* constant for this profile

    @property
    def media_extensions(self) -> bool:
        return self.name.endswith("+me")


@dataclass(frozen=True, slots=True)
class GpuModel:
    """The MIG table of one GPU product."""

    key: str  # "A100-40GB"
    compute_slices: int  # 7 (A30: 4)
    memory_slices: int  # 8 (A30: 4)
    memory_mb: int  # total memory as NVML reports it (nvmlDeviceGetMemoryInfo().total / 2**20)
    profiles: tuple[Profile, ...]

    def profile(self, name: str) -> Profile | None:
        for p in self.profiles:
            if p.name == name:
                return p
        return None

    def profile_by_id(self, profile_id: int) -> Profile | None:
        for p in self.profiles:
            if p.profile_id == profile_id:
                return p
        return None

    @property
    def profile_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)


def _seven_slice_model(key: str, total_mb: int, names: tuple[str, ...], mbs: tuple[int, ...]) -> GpuModel:
    """A100/H100/H200 shape: 1g, 1g+me, 1g (2 memory slices), 2g, 3g, 4g, 7g."""
    one = tuple(range(7))
    shapes = (  # id, compute, memory slices, max, starts, nvml index
        (19, 1, 1, 7, one, _NVML_1_SLICE),
        (20, 1, 1, 1, one, _NVML_1_SLICE_REV1),
        (15, 1, 2, 4, (0, 2, 4, 6), _NVML_1_SLICE_REV2),
        (14, 2, 2, 3, (0, 2, 4), _NVML_2_SLICE),
        (9, 3, 4, 2, (0, 4), _NVML_3_SLICE),
        (5, 4, 4, 1, (0,), _NVML_4_SLICE),
        (0, 7, 8, 1, (0,), _NVML_7_SLICE),
    )
    profiles = tuple(
        Profile(name, pid, cs, ms, mx, starts, _gb_of(name), mb, idx)
        for name, mb, (pid, cs, ms, mx, starts, idx) in zip(names, mbs, shapes, strict=True)
    )
    return GpuModel(key, 7, 8, total_mb, profiles)


def _gb_of(name: str) -> int:
    m = re.search(r"\.(\d+)gb", name)
    assert m, name
    return int(m.group(1))


A100_40GB = _seven_slice_model(
    "A100-40GB", 40960,
    ("1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    (4864, 4864, 9856, 9984, 19968, 19968, 40192),
)
A100_80GB = _seven_slice_model(
    "A100-80GB", 81920,
    ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    (9728, 9728, 19968, 19968, 40192, 40192, 80896),
)
H100_80GB = _seven_slice_model(
    "H100-80GB", 81559,
    ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    (9856, 9856, 20096, 20096, 40320, 40320, 80640),
)
H100_94GB = _seven_slice_model(
    "H100-94GB", 95830,
    ("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"),
    (11008, 11008, 22784, 22784, 45568, 45568, 91392),
)
H200_141GB = _seven_slice_model(
    "H200-141GB", 143771,
    ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
    (16384, 16384, 33280, 33280, 71424, 71424, 143360),
)
A30_24GB = GpuModel(
    "A30-24GB", 4, 4, 24576,
    (
        Profile("1g.6gb", 14, 1, 1, 4, (0, 1, 2, 3), 6, 5952, _NVML_1_SLICE),
        Profile("1g.6gb+me", 21, 1, 1, 1, (0, 1, 2, 3), 6, 5952, _NVML_1_SLICE_REV1),
        Profile("2g.12gb", 5, 2, 2, 2, (0, 2), 12, 11968, _NVML_2_SLICE),
        Profile("2g.12gb+me", 6, 2, 2, 1, (0, 2), 12, 11968, _NVML_2_SLICE_REV1),
        Profile("4g.24gb", 0, 4, 4, 1, (0,), 24, 24064, _NVML_4_SLICE),
    ),
)

MODELS: dict[str, GpuModel] = {m.key: m for m in (A100_40GB, A100_80GB, H100_80GB, H100_94GB, H200_141GB, A30_24GB)}


def gpu_model(name: str) -> GpuModel | None:
    """The table for an NVML device name, or None for a GPU without a known MIG table.

    Accepts NVML names ("NVIDIA A100-PCIE-40GB", "NVIDIA A100-SXM4-80GB",
    "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL",
    "NVIDIA H200", "NVIDIA A30") and the table keys ("A100-40GB", ...).
    """
    if name in MODELS:
        return MODELS[name]
    n = name.upper()
    if re.search(r"\bA100", n):
        return A100_80GB if "80GB" in n else A100_40GB
    if re.search(r"\bH100", n):
        return H100_94GB if ("NVL" in n or "94GB" in n) else H100_80GB
    if re.search(r"\bH200", n):
        return H200_141GB
    if re.search(r"\bA30\b", n):
        return A30_24GB
    return None


def require_model(name: str) -> GpuModel:
    model = gpu_model(name)
    if model is None:
        known = ", ".join(MODELS)
        raise RequestError(f"unknown MIG GPU model {name!r} (known: {known})")
    return model


def is_full_layout(layout: list[str] | tuple[str, ...]) -> bool:
    """True for ["full"]: MIG mode off, the whole GPU is one slice."""
    return list(layout) == [FULL_PROFILE]


def place_layout(model: GpuModel, layout: list[str] | tuple[str, ...]) -> list[tuple[str, int]] | None:
    """A start slice for every instance of ``layout``, or None if it cannot be placed.

    ``["full"]`` (MIG off) places trivially as ``[]``. The result is ordered
    largest instance first, each ``(profile, start)``.
    """
    if is_full_layout(layout):
        return []
    profiles: list[Profile] = []
    for name in layout:
        p = model.profile(name)
        if p is None:
            return None
        profiles.append(p)
    if sum(p.compute_slices for p in profiles) > model.compute_slices:
        return None
    if sum(p.memory_slices for p in profiles) > model.memory_slices:
        return None
    if sum(1 for p in profiles if p.media_extensions) > 1:
        return None
    for p in set(profiles):
        if profiles.count(p) > p.max_count:
            return None
    order = sorted(profiles, key=lambda p: (-p.memory_slices, -p.compute_slices, len(p.starts), p.name))
    starts = _assign(order, 0, [False] * model.memory_slices)
    if starts is None:
        return None
    return [(p.name, s) for p, s in zip(order, starts, strict=True)]


def _assign(order: list[Profile], i: int, used: list[bool]) -> list[int] | None:
    if i == len(order):
        return []
    p = order[i]
    for s in p.starts:
        span = range(s, s + p.memory_slices)
        if span.stop > len(used) or any(used[k] for k in span):
            continue
        for k in span:
            used[k] = True
        rest = _assign(order, i + 1, used)
        for k in span:
            used[k] = False
        if rest is not None:
            return [s, *rest]
    return None


def is_valid_layout(model: GpuModel, layout: list[str] | tuple[str, ...]) -> bool:
    """Whether ``layout`` can exist on one GPU of this model (``["full"]`` = MIG off is valid)."""
    return place_layout(model, layout) is not None


@lru_cache(maxsize=None)
def valid_layouts(model_key: str) -> tuple[tuple[str, ...], ...]:
    """Every valid non-empty layout of a model, as sorted tuples of profile names (cached)."""
    model = MODELS[model_key]
    names = sorted(model.profile_names)
    found: set[tuple[str, ...]] = set()

    def grow(layout: tuple[str, ...], start: int) -> None:
        for i in range(start, len(names)):
            cand = (*layout, names[i])
            if is_valid_layout(model, cand):
                found.add(cand)
                grow(cand, i)

    grow((), 0)
    return tuple(sorted(found))


def possible_profiles(gpu_names: list[str] | tuple[str, ...] | set[str] | frozenset[str]) -> frozenset[str]:
    """Every profile some layout of these GPUs could offer, plus "full"."""
    out = {FULL_PROFILE}
    for name in gpu_names:
        model = gpu_model(name)
        if model is not None:
            out.update(model.profile_names)
    return frozenset(out)


_CI_RE = re.compile(r"^(?:(\d+)c\.)?(\d+)g\.\d+gb(?:[+-]me(?:\.all)?)?$")


def compute_slices_for(profile: str, gpu_compute_slices: int = 7) -> int:
    """Compute slices of a profile name: "2g.10gb" -> 2, "1c.3g.20gb" -> 1, "full" -> the GPU's."""
    if profile == FULL_PROFILE:
        return gpu_compute_slices
    m = _CI_RE.match(profile)
    if m is None:
        raise RequestError(f"not a MIG profile: {profile!r} (expected e.g. 2g.10gb, 1c.3g.20gb or full)")
    return int(m.group(1) or m.group(2))
