"""Typed, hostile-input checks for request fields: every refusal is one line naming the field and what
is allowed. Used by submit and the other services; nothing here touches the database."""
from __future__ import annotations

import math
import re
from typing import Any

from ds01q.errors import RequestError

MAX_OUTPUT = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
DISCARD = "/dev/null"  # `--output none`: the client sends this; it means "keep no output file"


def printable(value: Any) -> Any:
    """``value`` with control characters (terminal escapes, bidi overrides) replaced by '?';
    for any string shown to another user. Non-strings are returned unchanged."""
    return _CONTROL.sub("?", value) if isinstance(value, str) else value


def strict_bool(a: dict[str, Any], key: str, default: bool) -> bool:
    """A JSON true/false only: ``"false"``, 0 or ``[]`` are errors, never truthy."""
    v = a.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise RequestError(f"{key}: {type(v).__name__} {printable(repr(v))[:40]} is not allowed (allowed: true, false)")
    return v


def strict_int(a: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    v = a.get(key)
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
        raise RequestError(f"{key}: {printable(repr(v))[:40]} is not a whole number from {low} to {high}")
    return v


def output_name(value: Any, key: str = "output") -> str | None:
    """A job's output file name: relative to the working directory, no ``..``, no absolute path.

    Returns None for "not given", ``DISCARD`` for ``none``. ``%j`` is kept for the caller to expand.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"--{key}: must be a file name, not {type(value).__name__}")
    if value == DISCARD or value.lower() == "none":
        return DISCARD
    shown = printable(value)[:80]
    if not value or len(value) > MAX_OUTPUT or _CONTROL.search(value):
        raise RequestError(f"--{key} {shown!r}: a file name of 1-{MAX_OUTPUT} printable characters")
    if value.startswith("/"):
        raise RequestError(f"--{key} {shown!r}: absolute paths are not allowed (allowed: a name relative to "
                           "the working directory, like logs/%j.out)")
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise RequestError(f"--{key} {shown!r}: '..', '.' and empty components are not allowed (allowed: a name "
                           "relative to the working directory, like logs/%j.out)")
    return value


def cpus_within(value: Any, default: float | None, cap: float | None) -> float | None:
    """CPUs for a job: a finite number from 0.01 up to the group's ``max_cpus`` (1024 without one)."""
    top = cap if cap is not None else 1024.0
    if value is None:
        value = default
        if value is None:
            return cap
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or not 0.01 <= value <= top):
        raise RequestError(f"--cpus {printable(repr(value))[:40]} is not a number of CPUs from 0.01 to {top:g}")
    return float(value)


def mem_within(size: int | None, shown: Any, default: int | None, cap: int | None) -> int | None:
    """Memory for a job: from 4 MiB up to the group's ``max_mem``; no request means the default (or the cap)."""
    if shown is None:
        size = default if default is not None else cap
        if size is None:
            return None
        if cap is not None and size > cap:
            size = cap
        return size
    top = f"{cap // (1024 * 1024)}m" if cap is not None else "1048576g"
    hard = cap if cap is not None else 1024 ** 4 * 1024
    if size is None or not 4 * 1024 * 1024 <= size <= hard:
        raise RequestError(f"--mem {printable(repr(shown))[:40]} is not a size from 4m to {top}, like 512m or 32g")
    return size


_NUM = (int, float)
SUBMIT_TYPES: dict[str, tuple[type, ...]] = {
    "script": (str,), "script_path": (str,), "args": (list,), "name": (str,), "mig": (str,), "gpus": (int,),
    "gpu_mem": (str, int), "cpus": _NUM, "mem": (str, int), "time": (str, int, float), "image": (str,),
    "nice": (int,), "env": (dict,), "output": (str,), "error": (str,), "workdir": (str,), "hold": (bool,),
    "interactive": (bool,), "requeue": (bool,),
}


def check_types(a: dict[str, Any], types: dict[str, tuple[type, ...]]) -> None:
    """Each known field present (and not null) has one of its JSON types; bool is never a number."""
    for key, kinds in types.items():
        v = a.get(key)
        if v is None:
            continue
        if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
            names = " or ".join({"str": "string", "int": "whole number", "float": "number", "list": "list",
                                 "dict": "mapping", "bool": "true/false"}[k.__name__] for k in kinds)
            flag = key if kinds == (bool,) else f"--{key.replace('_', '-')}"
            raise RequestError(f"{flag}: {type(v).__name__} {printable(repr(v))[:40]} is not allowed "
                               f"(allowed: {names})")
