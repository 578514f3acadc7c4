"""Applying sbatch options one by one, as sbatch applies them (a later one overrides an earlier one), then
resolving what depends on others (per-CPU and per-GPU amounts). Option words are split and matched in
directives.py; the table of options is sbatch_options.py."""
from __future__ import annotations

import math
import re
from typing import Any

import ds01q.slurm_values as sv
from ds01q.client.sbatch_options import IGNORED_WHY, ONE_SERVER, REFUSED_WHY, Option, Parsed
from ds01q.errors import RequestError
from ds01q.units import parse_size

__all__ = ["INT", "Reader"]

INT = re.compile(r"^[+-]?\d{1,9}$")


def whole(value: str, least: int = 1) -> int:
    if not INT.match(value.strip()) or int(value) < least:
        raise RequestError(f"{value!r} is not a whole number of at least {least}")
    return int(value)


class Reader:
    """Applies options in order (``apply``), then resolves per-CPU and per-GPU amounts (``finish``)."""

    def __init__(self) -> None:
        self.out: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.gpu: dict[str, Any] | None = None
        self.cpus: tuple[str, float, str, str] | None = None  # (how, amount, where, as written)
        self.mem: tuple[str, int, str, str] | None = None
        self.export_env: dict[str, str] = {}
        self.env: dict[str, str] = {}

    def apply(self, opt: Option, value: str | None, where: str) -> None:
        shown = f"--{opt.name}" + ("" if value is None else f"={value}")
        if opt.action == "ignore":
            self.warnings.append(f"{where}{shown} ignored: {IGNORED_WHY.get(opt.name, ONE_SERVER)}")
            return
        if opt.action == "refuse":
            raise RequestError(f"{where}--{opt.name} cannot be honoured: {REFUSED_WHY[opt.name]}")
        try:
            getattr(self, "opt_" + opt.action)(value, where, shown)
        except RequestError as e:
            raise RequestError(f"{where}--{opt.name}: {e}") from None

    # ------------------------------------------------------------ one option each
    def opt_name(self, v: str, where: str, shown: str) -> None:
        if not v or not v.isprintable():
            raise RequestError(f"{v!r}: a job name is one or more printable characters")
        self.out["name"] = v

    def opt_time(self, v: str, where: str, shown: str) -> None:
        secs = sv.parse_time_limit(v)
        if secs is None:
            self.out.pop("time", None)
            self.warnings.append(f"{where}{shown}: ds01q has no unlimited jobs; the group's maximum run time applies")
        else:
            self.out["time"] = sv.format_time(secs)

    def opt_gres(self, v: str, where: str, shown: str) -> None:
        self.gpu = sv.parse_gres(v)

    def opt_gpus(self, v: str, where: str, shown: str) -> None:
        self.gpu = sv.parse_gpus(v)

    def opt_mig(self, v: str, where: str, shown: str) -> None:
        if not v:
            raise RequestError("needs a MIG profile (like 1g.10gb, 2g.10gb, 3g.20gb)")
        self.gpu = {"mig": v}  # the server checks it against the profiles it knows

    def opt_gpu_mem(self, v: str, where: str, shown: str) -> None:
        size = parse_size(v)
        if size is None or size <= 0:
            raise RequestError(f"{v!r} is not a size like 10g or 512m")
        self.gpu = {"gpu_mem": v}

    def opt_cpus_per_task(self, v: str, where: str, shown: str) -> None:
        self.cpus = ("cpus", whole(v), where, shown)

    def opt_cpus_per_gpu(self, v: str, where: str, shown: str) -> None:
        self.cpus = ("per_gpu", whole(v), where, shown)

    def opt_cpus(self, v: str, where: str, shown: str) -> None:
        try:
            n = float(v)
        except ValueError:
            n = -1.0
        if not 0 < n <= 1024:
            raise RequestError(f"{v!r} is not a number of CPUs from 0.01 to 1024")
        self.cpus = ("cpus", int(n) if n.is_integer() else n, where, shown)

    def opt_mem(self, v: str, where: str, shown: str) -> None:
        self.mem = ("mem", sv.parse_mbytes(v), where, shown)

    def opt_mem_per_cpu(self, v: str, where: str, shown: str) -> None:
        self.mem = ("per_cpu", sv.parse_mbytes(v), where, shown)

    def opt_mem_per_gpu(self, v: str, where: str, shown: str) -> None:
        self.mem = ("per_gpu", sv.parse_mbytes(v), where, shown)

    def opt_output(self, v: str, where: str, shown: str, key: str = "output") -> None:
        if not v:
            raise RequestError("needs a file name (patterns like slurm-%j.out are fine)")
        self.out[key] = "/dev/null" if v.lower() == "none" else v

    def opt_error(self, v: str, where: str, shown: str) -> None:
        self.opt_output(v, where, shown, key="error")

    def opt_chdir(self, v: str, where: str, shown: str) -> None:
        if not v:
            raise RequestError("needs a directory")
        self.out["chdir"] = v

    def opt_image(self, v: str, where: str, shown: str) -> None:
        if not v:
            raise RequestError("needs an image name")
        self.out["image"] = v

    def opt_nice(self, v: str | None, where: str, shown: str) -> None:
        n = 100 if v is None else whole(v, least=-(2**31))
        if n < 0:
            raise RequestError(f"{v!r}: a negative nice raises priority, which only an admin may do (use 0 or more)")
        self.out["nice"] = n

    def opt_hold(self, v: None, where: str, shown: str) -> None:
        self.out["hold"] = True

    def opt_requeue(self, v: None, where: str, shown: str) -> None:
        self.out["requeue"] = True

    def opt_no_requeue(self, v: None, where: str, shown: str) -> None:
        self.out["requeue"] = False

    def opt_open_mode(self, v: str, where: str, shown: str) -> None:
        if v.lower() not in ("append", "truncate"):
            raise RequestError(f"{v!r} is not append or truncate")
        self.out["open_mode"] = v.lower()

    def opt_array(self, v: str, where: str, shown: str) -> None:
        self.out["array"] = sv.parse_array(v)

    def opt_dependency(self, v: str, where: str, shown: str) -> None:
        self.out["dependency"] = sv.parse_dependency(v)

    def opt_begin(self, v: str, where: str, shown: str) -> None:
        self.out["begin"] = sv.parse_begin(v)

    def opt_signal(self, v: str, where: str, shown: str) -> None:
        sig = sv.parse_signal(v)
        if sig.pop("reservation", False):
            self.warnings.append(f"{where}{shown}: R (signal at the reservation's end) ignored: {ONE_SERVER}")
        self.out["signal"] = sig

    def opt_export(self, v: str, where: str, shown: str) -> None:
        self.out["export"], self.export_env = sv.parse_export(v)

    def opt_env(self, v: str, where: str, shown: str) -> None:
        key, sep, val = v.partition("=")
        if not sep:
            raise RequestError(f"{v!r} is not KEY=VALUE")
        self.env[sv.env_name(key, v)] = val

    def opt_mail_type(self, v: str, where: str, shown: str) -> None:
        types = self.out.setdefault("mail_type", [])  # Slurm adds mail types up over options
        types.extend(t for t in sv.parse_mail_types(v) if t not in types)

    def opt_mail_user(self, v: str, where: str, shown: str) -> None:
        if not v:
            raise RequestError("needs an address")
        self.out["mail_user"] = v

    def opt_nodes(self, v: str, where: str, shown: str) -> None:
        m = re.match(r"^(\d{1,6})(?:-(\d{1,6}))?$", v)
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise RequestError(f"{v!r} is not a node count (N or MIN-MAX)")
        if int(m.group(1)) > 1:
            raise RequestError(f"{v} nodes cannot be honoured on one server (use --nodes=1)")
        self.warnings.append(f"{where}{shown} ignored: a ds01q job always runs on one node")

    def opt_ntasks(self, v: str, where: str, shown: str) -> None:
        if whole(v) > 1:
            raise RequestError(f"{v} tasks cannot be honoured on one server: ds01q runs the script once, as one "
                               "task (ask for CPUs with --cpus-per-task)")
        self.warnings.append(f"{where}{shown} ignored: a ds01q job is always one task")

    # ------------------------------------------------------------ per-CPU and per-GPU amounts
    def _gpu_count(self, where: str, shown: str) -> int:
        if self.gpu is None:
            self.warnings.append(f"{where}{shown}: no GPU option, so one GPU (the group's default request) is "
                                 "assumed")
            return 1
        if "gpus" in self.gpu:
            if self.gpu["gpus"] == 0:
                raise RequestError(f"{where}{shown}: the job asks for no GPUs (--gpus=0), so there is nothing to "
                                   "multiply by; use --mem or --cpus-per-task")
            return int(self.gpu["gpus"])
        return 1  # one MIG slice, or one slice with --gpu-mem

    def finish(self) -> Parsed:
        out = dict(self.out)
        if self.gpu is not None:
            out.update(self.gpu)
        cpus: float | None = None
        if self.cpus is not None:
            how, amount, where, shown = self.cpus
            cpus = amount if how == "cpus" else amount * self._gpu_count(where, shown)
            out["cpus"] = cpus
        if self.mem is not None:
            how, mib, where, shown = self.mem
            if how == "per_gpu":
                mib *= self._gpu_count(where, shown)
            elif how == "per_cpu":
                if cpus is None and mib:
                    self.warnings.append(f"{where}{shown}: no CPU count, so 1 CPU is assumed (as in Slurm)")
                mib = math.ceil(mib * (cpus or 1))
            if mib:
                out["mem"] = sv.format_mbytes(mib)
            else:
                self.warnings.append(f"{where}{shown}: Slurm's 'all the memory' is no memory limit here; the "
                                     "group's default applies")
        env = {**self.export_env, **self.env}
        if env:
            out["env"] = env
        return Parsed(options=out, warnings=list(self.warnings))
