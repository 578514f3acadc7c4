"""Slurm's option values, read as sbatch reads them: pure functions, no I/O.

Each parser takes the value of one option and returns plain data (ints, strings, dicts, lists), or raises
``RequestError`` whose one-line message names the bad value and what is allowed. The messages do not name
the option: ``directives.py`` puts ``script line N: --opt:`` in front.

Sources (Slurm's own code): ``time_str2secs``/``time_str2mins`` (src/common/parse_time.c) for --time,
``str_to_mbytes`` (src/common/proc_args.c) for memory sizes, ``parse_time`` for --begin, slurmstepd's
``fname.c`` for the %-patterns of --output/--error, and the sbatch man page for --array, --dependency,
--signal, --export and --mail-type.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
import signal as _signal
from typing import Any

from ds01q.errors import RequestError

__all__ = [
    "MAX_ARRAY_INDEX", "MAX_ARRAY_TASKS", "MIG_PROFILE", "expand_pattern", "format_mbytes", "format_time",
    "gpu_request", "parse_array", "parse_begin", "parse_dependency", "parse_export", "parse_gpus", "parse_gres",
    "parse_mail_types", "parse_mbytes", "parse_signal", "parse_time_limit",
]

MIG_PROFILE = re.compile(r"^\d+g\.\d+gb(\+me)?$")
MAX_ARRAY_TASKS = 10_000
MAX_ARRAY_INDEX = 1_000_000
NO_VAL = 4294967294  # what Slurm prints for %a in a job that is not an array task

# ----------------------------------------------------------------------------- time limits (--time)
TIME_FORMS = "M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, UNLIMITED, or ds01q's 30m, 24h, 2d"
_DS01Q_DURATION = re.compile(r"^(\d{1,9}(?:\.\d{1,6})?)([smhd])$", re.IGNORECASE)
_DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TIME = re.compile(r"^(?:(\d{1,9})-(\d{1,9})(?::(\d{1,9})(?::(\d{1,9}))?)?|(\d{1,9})(?::(\d{1,9})(?::(\d{1,9}))?)?)$")


def parse_time_limit(value: str) -> int | None:
    """Seconds of a Slurm time limit, rounded up to whole minutes as Slurm does (``time_str2mins``).

    None means unlimited: ``UNLIMITED``, ``INFINITE``, ``-1`` and (as in sbatch) a limit of 0. ds01q's own
    durations (``90s``, ``30m``, ``1.5h``, ``2d``; never valid in Slurm) are taken too, to the second."""
    text = value.strip()
    if text.lower() in ("unlimited", "infinite", "-1"):
        return None
    own = _DS01Q_DURATION.match(text)
    if own:
        secs = math.ceil(float(own.group(1)) * _DURATION_S[own.group(2).lower()])
        if secs <= 0:
            raise RequestError(f"{value!r}: a time limit must be positive (or UNLIMITED)")
        return secs
    m = _TIME.match(text)
    if not m:
        raise RequestError(f"{value!r} is not a time limit (allowed: {TIME_FORMS})")
    d, dh, dm, ds, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if d is not None:
        secs = d * 86400 + (dh or 0) * 3600 + (dm or 0) * 60 + (ds or 0)
    elif c is not None:
        secs = (a or 0) * 3600 + (b or 0) * 60 + c
    elif b is not None:
        secs = (a or 0) * 60 + b
    else:
        secs = (a or 0) * 60
    minutes = -(-secs // 60)
    return minutes * 60 if minutes else None


def format_time(seconds: int) -> str:
    """``H:MM:SS`` or ``D-HH:MM:SS``, which ds01q.units.parse_duration reads back exactly."""
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h}:{m:02d}:{s:02d}"


# ----------------------------------------------------------------------------- sizes (--mem, --mem-per-*)
_MBYTES = re.compile(r"^(\d{1,15}(?:\.\d{1,6})?)(?:([kmgt])(?:i?b)?)?$", re.IGNORECASE)
_MB_PER_UNIT = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def parse_mbytes(value: str) -> int:
    """MiB from Slurm's size syntax: a whole number with an optional K, M, G or T (and an optional B after
    it); a bare number is MiB; K rounds up to whole MiB. ds01q also takes a decimal (1.5G) and KiB-style
    suffixes (10GiB), as its own --mem always did."""
    m = _MBYTES.match(value.strip())
    if not m:
        raise RequestError(f"{value!r} is not a size (allowed: a number with K, M, G or T; a bare number is MiB)")
    return math.ceil(float(m.group(1)) * _MB_PER_UNIT[(m.group(2) or "m").lower()])


def format_mbytes(mib: int) -> str:
    """``Nt``, ``Ng`` or ``Nm``, which ds01q.units.parse_size reads back exactly."""
    if mib and mib % (1024 * 1024) == 0:
        return f"{mib // (1024 * 1024)}t"
    if mib and mib % 1024 == 0:
        return f"{mib // 1024}g"
    return f"{mib}m"


# ----------------------------------------------------------------------------- GPUs (--gres, --gpus*)
_GPU_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def gpu_request(gpu_type: str | None, count: int) -> dict[str, Any]:
    """One GPU request: ``{"gpus": N}``, ``{"gpus": N, "gpu_model": M}`` or ``{"mig": PROFILE}``.

    A type that looks like a MIG profile (``2g.10gb``, ``1g.10gb+me``) is one slice of that profile; any
    other type is a GPU model (``a100``, ``h100``)."""
    if gpu_type is None:
        return {"gpus": count}
    if not _GPU_TYPE.match(gpu_type):
        raise RequestError(f"{gpu_type!r} is not a GPU type (a model like a100 or a MIG profile like 2g.10gb)")
    t = gpu_type.lower()
    if MIG_PROFILE.match(t):
        if count != 1:
            raise RequestError(f"a MIG profile is one slice: ask for {t}:1, not {count} (submit one job per slice)")
        return {"mig": t}
    return {"gpus": 0} if count == 0 else {"gpus": count, "gpu_model": t}


def _count(text: str, whole: str) -> int:
    if not text.isdigit() or len(text) > 4:
        raise RequestError(f"{whole!r}: {text!r} is not a whole number of GPUs")
    return int(text)


def parse_gpus(value: str) -> dict[str, Any]:
    """--gpus / -G / --gpus-per-node / --gpus-per-task: ``[TYPE:]N`` for one type."""
    if "," in value:
        raise RequestError(f"{value!r}: ask for one GPU type only ([TYPE:]N)")
    gpu_type, sep, count = value.rpartition(":")
    return gpu_request(gpu_type if sep else None, _count(count, value))


def parse_gres(value: str) -> dict[str, Any]:
    """--gres: ``gpu``, ``gpu:N``, ``gpu:TYPE`` or ``gpu:TYPE:N`` (and ``none``); only GPUs are generic
    resources on ds01q."""
    if value.strip().lower() == "none":
        return {"gpus": 0}
    if "," in value:
        raise RequestError(f"{value!r}: ask for one generic resource, gpu[:TYPE][:N]")
    parts = value.split(":")
    if parts[0] != "gpu" or len(parts) > 3:
        raise RequestError(f"{value!r} is not gpu[:TYPE][:N] (ds01q has no other generic resources)")
    if len(parts) == 1:
        return gpu_request(None, 1)
    if len(parts) == 2:
        return gpu_request(None, _count(parts[1], value)) if parts[1].isdigit() else gpu_request(parts[1], 1)
    return gpu_request(parts[1], _count(parts[2], value))


# ----------------------------------------------------------------------------- --array
_ARRAY_TOKEN = re.compile(r"^(\d{1,9})(?:-(\d{1,9})(?::(\d{1,9}))?)?$")


def parse_array(value: str) -> dict[str, Any]:
    """``0-99%4``, ``1,3,5``, ``0-15:4``: ``{"indices": [sorted, unique], "throttle": N or None}``."""
    allowed = "allowed: N, N-M, N-M:STEP, joined by commas, with an optional %MAX_RUNNING"
    spec, sep, throttle_text = value.partition("%")
    throttle = None
    if sep:
        if not throttle_text.isdigit() or int(throttle_text) < 1:
            raise RequestError(f"{value!r}: %{throttle_text} is not a number of tasks to run at once (>= 1)")
        throttle = int(throttle_text)
    indices: set[int] = set()
    for token in spec.split(","):
        m = _ARRAY_TOKEN.match(token)
        if not m:
            raise RequestError(f"{value!r}: {token!r} is not an index range ({allowed})")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        step = int(m.group(3)) if m.group(3) is not None else 1
        if hi < lo or step < 1:
            raise RequestError(f"{value!r}: {token!r} is an empty range ({allowed})")
        if hi > MAX_ARRAY_INDEX:
            raise RequestError(f"{value!r}: index {hi} is above the maximum {MAX_ARRAY_INDEX}")
        span = range(lo, hi + 1, step)
        if len(span) > MAX_ARRAY_TASKS or len(indices | set(span)) > MAX_ARRAY_TASKS:
            raise RequestError(f"{value!r}: more than {MAX_ARRAY_TASKS} tasks in one array")
        indices.update(span)
    return {"indices": sorted(indices), "throttle": throttle}


# ----------------------------------------------------------------------------- --dependency
DEPENDENCY_TYPES = ("after", "afterany", "aftercorr", "afternotok", "afterok", "singleton")
_DEP_JOB = re.compile(r"^(\d{1,10})(?:_(\d{1,9}))?(?:\+(\d{1,9}))?$")


def parse_dependency(value: str) -> dict[str, Any]:
    """``afterok:1:2,afterany:3`` (all must hold) or ``afterok:1?afternotok:2`` (any one):
    ``{"mode": "all"|"any", "items": [{"type": T, "jobs": [{"id": N, "task"?: N, "delay_min"?: N}]}
    or {"type": "singleton"}]}``. A bare job id means afterany, as in Slurm."""
    allowed = (f"allowed: TYPE:JOBID[:JOBID...] joined by , (all) or ? (any); TYPE is one of "
               f"{', '.join(DEPENDENCY_TYPES)}")
    if "," in value and "?" in value:
        raise RequestError(f"{value!r} mixes , (all of) and ? (any of); use one of them")
    mode = "any" if "?" in value else "all"
    items: list[dict[str, Any]] = []
    for token in re.split(r"[,?]", value):
        if token.isdigit():
            items.append({"type": "afterany", "jobs": [{"id": int(token)}]})
            continue
        kind, sep, rest = token.partition(":")
        kind = kind.lower()
        if kind not in DEPENDENCY_TYPES:
            raise RequestError(f"{value!r}: {token!r} is not a dependency ({allowed})")
        if kind == "singleton":
            if sep:
                raise RequestError(f"{value!r}: singleton takes no job ids")
            items.append({"type": "singleton"})
            continue
        if not rest:
            raise RequestError(f"{value!r}: {kind} needs job ids ({kind}:JOBID[:JOBID...])")
        jobs = []
        for job in rest.split(":"):
            m = _DEP_JOB.match(job)
            if not m or int(m.group(1)) == 0:
                raise RequestError(f"{value!r}: {job!r} is not a job id (N, or N_TASK for an array task)")
            if m.group(3) is not None and kind != "after":
                raise RequestError(f"{value!r}: +MINUTES is allowed only with after (after:JOBID+MINUTES)")
            entry: dict[str, Any] = {"id": int(m.group(1))}
            if m.group(2) is not None:
                entry["task"] = int(m.group(2))
            if m.group(3) is not None:
                entry["delay_min"] = int(m.group(3))
            jobs.append(entry)
        items.append({"type": kind, "jobs": jobs})
    return {"mode": mode, "items": items}


# ----------------------------------------------------------------------------- --begin
_UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
_NOW = re.compile(r"^now(?:([+-])(\d{1,9})(seconds?|minutes?|hours?|days?|weeks?)?)?$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:t(\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_NAMED = {"midnight": "00:00:00", "tomorrow": "00:00:00", "noon": "12:00:00", "elevenses": "11:00:00",
          "fika": "15:00:00", "teatime": "16:00:00"}


def _clock(h: int, m: int, s: int, value: str) -> str:
    if h > 23 or m > 59 or s > 59:
        raise RequestError(f"{value!r} is not a time of day (HH:MM[:SS], 00:00 to 23:59:59)")
    return f"{h:02d}:{m:02d}:{s:02d}"


def parse_begin(value: str) -> dict[str, Any]:
    """``now+N[unit]`` → ``{"kind": "delay", "seconds": N}``; ``HH:MM[:SS]``, midnight, noon, teatime,
    tomorrow… → ``{"kind": "time", "time": "HH:MM:SS"}`` (the next time the clock shows it);
    ``YYYY-MM-DD[THH:MM[:SS]]`` → ``{"kind": "date", "at": "YYYY-MM-DDTHH:MM:SS"}`` (server local time)."""
    text = value.strip().lower()
    allowed = ("allowed: now+N[seconds|minutes|hours|days|weeks], HH:MM[:SS], YYYY-MM-DD[THH:MM[:SS]], "
               "midnight, noon, teatime, today, tomorrow")
    m = _NOW.match(text)
    if m:
        secs = int(m.group(2)) * _UNIT_S[(m.group(3) or "second").rstrip("s")] if m.group(1) == "+" else 0
        return {"kind": "delay", "seconds": secs}
    if text == "today":
        return {"kind": "delay", "seconds": 0}
    if text in _NAMED:
        return {"kind": "time", "time": _NAMED[text]}
    m = _CLOCK.match(text)
    if m:
        return {"kind": "time", "time": _clock(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), value)}
    m = _DATE.match(text)
    if m:
        try:
            day = _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            raise RequestError(f"{value!r} is not a date (YYYY-MM-DD)") from None
        clock = _clock(int(m.group(4) or 0), int(m.group(5) or 0), int(m.group(6) or 0), value)
        return {"kind": "date", "at": f"{day.isoformat()}T{clock}"}
    raise RequestError(f"{value!r} is not a start time ({allowed})")


# ----------------------------------------------------------------------------- --signal
_SIGNAL = re.compile(r"^(?:([RB]{1,2}):)?([A-Za-z0-9]+)(?:@(\d{1,9}))?$")


def parse_signal(value: str) -> dict[str, Any]:
    """``[B:]SIG[@SECONDS]``: ``{"signal": "USR1", "seconds": 60, "batch_only": bool}``; SIG is a name
    (USR1, SIGUSR1) or a number; SECONDS before the time limit, 60 by default, at most 65535. An ``R``
    flag (reservation end) is accepted and reported in ``"reservation"``."""
    m = _SIGNAL.match(value)
    if not m:
        raise RequestError(f"{value!r} is not [B:]SIGNAL[@SECONDS] (e.g. B:USR1@120)")
    flags, sig, secs_text = m.group(1) or "", m.group(2), m.group(3)
    try:
        if sig.isdigit():
            found = _signal.Signals(int(sig))
        else:
            name = sig.upper()
            found = _signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        raise RequestError(f"{value!r}: {sig!r} is not a signal (e.g. USR1, TERM, 10)") from None
    secs = 60 if secs_text is None else int(secs_text)
    if secs > 65535:
        raise RequestError(f"{value!r}: at most 65535 seconds before the time limit")
    out: dict[str, Any] = {"signal": found.name[3:], "seconds": secs, "batch_only": "B" in flags}
    if "R" in flags:
        out["reservation"] = True
    return out


# ----------------------------------------------------------------------------- --export
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_name(name: str, value: str) -> str:
    if not _ENV_NAME.match(name):
        raise RequestError(f"{value!r}: {name!r} is not an environment variable name")
    return name


def parse_export(value: str) -> tuple[dict[str, Any], dict[str, str]]:
    """``ALL``, ``NONE``, ``NIL`` or ``[ALL,]VAR[=value],...`` → (``{"mode": "ALL"|"NONE"|"NIL", "names": [VAR
    copied from the submitter's environment]}``, ``{VAR: value}``). A list without ALL exports only what it
    names (mode NONE), as in Slurm."""
    items = value.split(",")
    words = {i.upper() for i in items}
    if words & {"NONE", "NIL"} and len(items) > 1:
        raise RequestError(f"{value!r}: NONE and NIL stand alone (allowed: ALL, NONE, NIL or [ALL,]VAR[=value],...)")
    mode = "ALL" if "ALL" in words else ("NIL" if "NIL" in words else "NONE")
    names: list[str] = []
    env: dict[str, str] = {}
    for item in items:
        if item.upper() in ("ALL", "NONE", "NIL"):
            continue
        if not item:
            raise RequestError(f"{value!r} has an empty entry (allowed: ALL, NONE, NIL or [ALL,]VAR[=value],...)")
        key, sep, val = item.partition("=")
        if sep:
            env[env_name(key, value)] = val
        else:
            names.append(env_name(key, value))
    return {"mode": mode, "names": names}, env


# ----------------------------------------------------------------------------- --mail-type
MAIL_TYPES = ("NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT", "TIME_LIMIT",
              "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS")


def parse_mail_types(value: str) -> list[str]:
    """``BEGIN,END,FAIL`` → ``["BEGIN", "END", "FAIL"]`` (upper case, in order, no repeats; NONE → [])."""
    out: list[str] = []
    for item in value.split(","):
        t = item.strip().upper()
        if t not in MAIL_TYPES:
            raise RequestError(f"{value!r}: {item!r} is not a mail type (allowed: {', '.join(MAIL_TYPES)})")
        if t == "NONE":
            out = []
        elif t not in out:
            out.append(t)
    return out


# ----------------------------------------------------------------------------- %-patterns of --output/--error
_PATTERN = re.compile(r"%(%|(\d*)([AaJjNnstux]))")


def expand_pattern(pattern: str, *, job_id: int, name: str, user: str, array_job_id: int | None = None,
                   array_task_id: int | None = None, node: str = "localhost") -> str:
    """Slurm's file-name patterns for a batch job (slurmstepd's ``fname.c``):

    ``%%`` → ``%``; ``%j`` job id; ``%J`` job id (a batch script runs in no numbered step); ``%A`` the array's
    job id (the job id outside an array); ``%a`` the array task id (4294967294, Slurm's NO_VAL, outside an
    array); ``%x`` job name; ``%u`` user; ``%N`` node; ``%n``, ``%t`` 0 (node and task of the batch script);
    ``%s`` ``batch``. A number between ``%`` and the letter zero-pads numbers to that width (at most 10;
    ignored for names). Any other ``%`` sequence stays as written. A pattern with a backslash is not
    expanded at all; its backslashes are removed (``\\\\`` leaves one)."""
    if "\\" in pattern:
        return re.sub(r"\\(\\?)", r"\1", pattern)
    numbers = {"j": job_id, "J": job_id, "A": job_id if array_task_id is None else (array_job_id or job_id),
               "a": NO_VAL if array_task_id is None else array_task_id, "n": 0, "t": 0}
    words = {"x": name, "u": user, "N": node, "s": "batch"}

    def one(m: re.Match[str]) -> str:
        if m.group(1) == "%":
            return "%"
        width, letter = min(int(m.group(2) or 0), 10), m.group(3)
        if letter in numbers:
            return str(numbers[letter]).zfill(width)
        return words[letter]

    return _PATTERN.sub(one, pattern)
