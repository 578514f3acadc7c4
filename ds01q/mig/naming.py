"""MIG profile names from NVML attributes, the way go-nvlib derives them.

    g  = attributes.gpuInstanceSliceCount
    c  = attributes.computeInstanceSliceCount
    GB = round(ceil_to_1/8(memorySizeMB * 2**20 / parent_total_bytes) * ceil(parent GiB))
    name = f"{g}g.{GB}gb", prefixed f"{c}c." when c < g

go-nvlib rounds with Go's math.Round (half away from zero), not Python's
banker's rounding: an H200's 3g instance is 70.5 GB -> "3g.71gb". The
arithmetic here is exact (fractions), so it agrees with go-nvlib's float64
arithmetic except at float ties that no shipped GPU hits.
"""
from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["mig_memory_gb", "profile_name"]

_MIB = 1 << 20
_GIB = 1 << 30


def mig_memory_gb(memory_size_mb: int, parent_total_bytes: int) -> int:
    """The "10" in 2g.10gb for an instance of ``memory_size_mb`` MiB on a GPU of ``parent_total_bytes``."""
    if parent_total_bytes <= 0:
        raise ValueError(f"parent GPU memory must be positive, got {parent_total_bytes}")
    fraction = Fraction(memory_size_mb * _MIB, parent_total_bytes)
    eighths = Fraction(math.ceil(fraction * 8), 8)
    total_gib = -(-parent_total_bytes // _GIB)  # ceil
    return math.floor(eighths * total_gib + Fraction(1, 2))


def profile_name(gi_slices: int, ci_slices: int, memory_size_mb: int, parent_total_bytes: int, suffix: str = "") -> str:
    """E.g. profile_name(1, 1, 4864, 40 * 2**30) == "1g.5gb"; ``suffix`` is "+me" for media-extension GIs."""
    name = f"{gi_slices}g.{mig_memory_gb(memory_size_mb, parent_total_bytes)}gb{suffix}"
    if 0 < ci_slices < gi_slices:
        name = f"{ci_slices}c.{name}"
    return name
