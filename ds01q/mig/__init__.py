"""MIG layouts: placement tables, profile naming, layout planning and nvidia-smi commands.

May import only ds01q.types, ds01q.errors and the standard library.
"""
from __future__ import annotations

from ds01q.mig.smi import MigController, run_subprocess
from ds01q.mig.naming import mig_memory_gb, profile_name
from ds01q.mig.planner import ANY, FULL_LAYOUT, Plan, fill_layout, make_plan, mig_commands, plan_layout, same_layout
from ds01q.mig.profiles import (
    MODELS,
    GpuModel,
    Profile,
    compute_slices_for,
    gpu_model,
    is_full_layout,
    is_valid_layout,
    place_layout,
    possible_profiles,
    require_model,
    valid_layouts,
)

__all__ = [
    "ANY",
    "FULL_LAYOUT",
    "MODELS",
    "GpuModel",
    "MigController",
    "Plan",
    "Profile",
    "compute_slices_for",
    "fill_layout",
    "gpu_model",
    "is_full_layout",
    "is_valid_layout",
    "make_plan",
    "mig_commands",
    "mig_memory_gb",
    "place_layout",
    "plan_layout",
    "possible_profiles",
    "profile_name",
    "require_model",
    "run_subprocess",
    "same_layout",
    "valid_layouts",
]
