"""Slurm's option values: moved to the leaf ``ds01q.slurm_values`` so that the daemon validates with the
same code; this name keeps working."""
from ds01q.slurm_values import *  # noqa: F401,F403
from ds01q.slurm_values import NO_VAL, __all__  # noqa: F401
