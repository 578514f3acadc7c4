"""The options a ``#SBATCH``/``#DS01Q`` line (or a command line) may hold: sbatch's, with what ds01q does
with each (honours it, ignores it with a warning, or refuses it with a reason), and ds01q's own."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALLOWED", "BY_LONG", "BY_SHORT", "DS01Q_OPTIONS", "IGNORED_WHY", "NO_ARG", "ONE_SERVER", "OPTIONAL",
           "Option", "Parsed", "REFUSED_WHY", "REQUIRED", "SLURM_BY_LONG", "SLURM_OPTIONS"]

NO_ARG, REQUIRED, OPTIONAL = 0, 1, 2


@dataclass(frozen=True)
class Option:
    name: str  # long name, without the dashes
    short: str  # one letter, or ""
    arg: int  # NO_ARG, REQUIRED or OPTIONAL (then only as --opt=value or -xVALUE)
    action: str  # a Reader.opt_* method (sbatch_reader.py), "ignore" (warning) or "refuse" (error)


@dataclass
class Parsed:
    """What a set of options asks for: ``options`` (keys above), ``warnings`` (one line each, for the user)
    and, for a command line, ``args``: the words from the first one that is not an option."""

    options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)


def _opts(arg: int, action: str, *names: str) -> list[Option]:
    """Options from "long" or "long/S" (S: the short letter)."""
    return [Option(n.split("/")[0], n.partition("/")[2], arg, action) for n in names]


_R, _N, _O = REQUIRED, NO_ARG, OPTIONAL
SLURM_OPTIONS: tuple[Option, ...] = tuple(
    # honoured
    _opts(_R, "array", "array/a") + _opts(_R, "begin", "begin/b") + _opts(_R, "chdir", "chdir/D")
    + _opts(_R, "cpus_per_gpu", "cpus-per-gpu") + _opts(_R, "cpus_per_task", "cpus-per-task/c")
    + _opts(_R, "dependency", "dependency/d") + _opts(_R, "error", "error/e") + _opts(_R, "export", "export")
    + _opts(_R, "gpus", "gpus/G", "gpus-per-node", "gpus-per-task") + _opts(_R, "gres", "gres")
    + _opts(_N, "hold", "hold/H") + _opts(_R, "name", "job-name/J") + _opts(_R, "mail_type", "mail-type")
    + _opts(_R, "mail_user", "mail-user") + _opts(_R, "mem", "mem") + _opts(_R, "mem_per_cpu", "mem-per-cpu")
    + _opts(_R, "mem_per_gpu", "mem-per-gpu") + _opts(_O, "nice", "nice") + _opts(_N, "no_requeue", "no-requeue")
    + _opts(_R, "nodes", "nodes/N") + _opts(_R, "ntasks", "ntasks/n", "ntasks-per-node")
    + _opts(_R, "open_mode", "open-mode") + _opts(_R, "output", "output/o") + _opts(_N, "requeue", "requeue")
    + _opts(_R, "signal", "signal") + _opts(_R, "time", "time/t")
    # no meaning on one server: a warning
    + _opts(_R, "ignore", "account/A", "acctg-freq", "batch", "cluster-constraint", "clusters/M", "comment",
            "constraint/C", "core-spec/S", "cores-per-socket", "cpu-freq", "deadline", "delay-boot",
            "distribution/m", "exclude/x", "extra", "extra-node-info/B", "gpu-bind", "gpu-freq", "gres-flags",
            "hint", "input/i", "kill-on-invalid-dep", "licenses/L", "mcs-label", "mem-bind", "mincpus",
            "network", "nodefile/F", "nodelist/w", "ntasks-per-core", "ntasks-per-gpu", "ntasks-per-socket",
            "partition/p", "power", "prefer", "priority", "profile", "qos/q", "reservation", "segment",
            "sockets-per-node", "switches", "thread-spec", "threads-per-core", "time-min", "tmp", "tres-bind",
            "wait-all-nodes", "wckey")
    + _opts(_N, "ignore", "contiguous", "ignore-pbs", "overcommit/O", "oversubscribe/s", "parsable", "quiet/Q",
            "reboot", "spread-job", "stepmgr", "use-min-nodes", "verbose/v", "wait/W")
    + _opts(_O, "ignore", "exclusive", "get-user-env", "no-kill/k", "oom-kill-step", "propagate")
    # cannot be honoured: an error
    + _opts(_R, "refuse", "bb", "bbf", "container", "container-id", "export-file", "gid", "gpus-per-socket",
            "tres-per-task", "uid", "wrap")
    + _opts(_N, "refuse", "help/h", "test-only", "usage/u", "version/V")
)
DS01Q_OPTIONS: tuple[Option, ...] = tuple(
    _opts(_R, "mig", "mig") + _opts(_R, "gpu_mem", "gpu-mem") + _opts(_R, "cpus", "cpus") + _opts(_R, "image", "image")
    + _opts(_R, "name", "name") + _opts(_R, "env", "env"))
SLURM_BY_LONG = {o.name: o for o in SLURM_OPTIONS}
BY_LONG = {**SLURM_BY_LONG, **{o.name: o for o in DS01Q_OPTIONS}}
BY_SHORT = {o.short: o for o in SLURM_OPTIONS if o.short}
ALLOWED = "allowed: sbatch's options, and ds01q's --mig, --gpu-mem, --cpus, --image, --name, --env"

ONE_SERVER = "it has no meaning on a single ds01q server"
IGNORED_WHY = {
    "wait": "use `ds01q submit --wait`", "parsable": "it changes only sbatch's own messages",
    "quiet": "it changes only sbatch's own messages", "verbose": "it changes only sbatch's own messages",
    "input": "batch jobs read no standard input", "priority": "an admin sets priorities (ds01q admin priority)",
    "deadline": "ds01q does not cancel jobs by deadline", "time-min": "ds01q schedules by --time only",
    "exclusive": "every job gets its own slices and container", "comment": "ds01q keeps no job comments",
    "kill-on-invalid-dep": "ds01q keeps such jobs pending (reason DependencyNeverSatisfied)",
}
REFUSED_WHY = {
    "wrap": "give ds01q submit a script", "test-only": "ds01q has no test-only submit",
    "help": "it is not a job option", "usage": "it is not a job option", "version": "it is not a job option",
    "uid": "jobs run as the user who submits them", "gid": "jobs run as the user who submits them",
    "bb": "ds01q has no burst buffers", "bbf": "ds01q has no burst buffers",
    "container": "ds01q runs jobs in images: use --image", "container-id": "ds01q runs jobs in images: use --image",
    "export-file": "use --export=VAR=value,...", "gpus-per-socket": "use --gpus",
    "tres-per-task": "use --cpus-per-task and --gpus-per-task",
}
