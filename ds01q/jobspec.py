"""Job options from a script's ``#DS01Q`` and ``#SBATCH`` lines (read until the first command)."""
from __future__ import annotations

import shlex
from typing import Any

from ds01q.errors import RequestError

# option → (key, kind)
OPTIONS: dict[str, tuple[str, str]] = {
    "--mig": ("mig", "str"), "--gpus": ("gpus", "int"), "-G": ("gpus", "int"), "--gpu-mem": ("gpu_mem", "str"),
    "--cpus": ("cpus", "float"), "--cpus-per-task": ("cpus", "float"), "-c": ("cpus", "float"),
    "--mem": ("mem", "str"), "--time": ("time", "str"), "-t": ("time", "str"), "--image": ("image", "str"),
    "--name": ("name", "str"), "--job-name": ("name", "str"), "-J": ("name", "str"), "--nice": ("nice", "int"),
    "--output": ("output", "str"), "-o": ("output", "str"), "--gres": ("gres", "str"), "--hold": ("hold", "flag"),
}
SBATCH_IGNORED = {"--partition", "-p", "--account", "-A", "--qos", "--nodes", "-N", "--ntasks", "-n",
                  "--mail-type", "--mail-user", "--error", "-e", "--export", "--constraint", "-C", "--exclusive"}


def gres(value: str) -> dict[str, Any]:
    """Slurm's --gres=gpu:N (N whole GPUs) or --gres=gpu:PROFILE:1 (one MIG slice)."""
    parts = value.split(":")
    if parts[0] != "gpu" or len(parts) not in (2, 3):
        raise RequestError(f"--gres {value!r} is not gpu:N or gpu:PROFILE:1")
    if len(parts) == 2 and parts[1].isdigit():
        return {"gpus": int(parts[1])}
    if len(parts) == 3 and parts[2] == "1":
        return {"mig": parts[1]}
    if len(parts) == 2:
        return {"mig": parts[1]}
    raise RequestError(f"--gres {value!r}: a MIG profile can be asked for once (gpu:PROFILE:1)")


def convert(key: str, kind: str, value: str, opt: str) -> Any:
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise RequestError(f"{opt} {value!r} is not a {'whole number' if kind == 'int' else 'number'}") from None
    return value


def parse_directives(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if lineno == 1 and s.startswith("#!"):
            continue
        if not s:
            continue
        if not s.startswith("#"):
            break
        for prefix, strict in (("#DS01Q", True), ("#SBATCH", False)):
            if s.startswith(prefix):
                out.update(_parse_line(s[len(prefix):], lineno, strict))
    return out


def _parse_line(rest: str, lineno: int, strict: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        words = shlex.split(rest, comments=False)
    except ValueError as e:
        raise RequestError(f"script line {lineno}: {e}") from None
    i = 0
    while i < len(words):
        w = words[i]
        opt, _, val = w.partition("=")
        if opt in SBATCH_IGNORED and not strict:
            i += 1 if val or i + 1 >= len(words) or words[i + 1].startswith("-") else 2
            continue
        if opt not in OPTIONS:
            if strict or opt.startswith("-") is False:
                raise RequestError(f"script line {lineno}: unknown option {opt!r} (allowed: {', '.join(sorted(OPTIONS))})")
            i += 1
            continue
        key, kind = OPTIONS[opt]
        if kind == "flag":
            out[key] = True
            i += 1
            continue
        if not val:
            if i + 1 >= len(words):
                raise RequestError(f"script line {lineno}: {opt} needs a value")
            val = words[i + 1]
            i += 1
        i += 1
        if key == "gres":
            out.update(gres(val))
        else:
            out[key] = convert(key, kind, val, opt)
    return out
