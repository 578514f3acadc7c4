"""Parsing of durations (30m, 24h, 2d) and sizes (512m, 32g)."""
from __future__ import annotations

import re
from datetime import datetime, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", re.IGNORECASE)
_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?$")  # Slurm: [D-]HH:MM[:SS]
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_DUR_MULT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_MULT = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(value: object) -> float | None:
    """Seconds from '30m', '24h', '2d', '90s', Slurm's '1-02:00:00'/'02:30:00', or a bare number of minutes
    (as Slurm's --time). Returns None when it is not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) * 60 if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = _DURATION.match(value)
    if m:
        return float(m.group(1)) * _DUR_MULT[m.group(2).lower()]
    m = _CLOCK.match(value.strip())
    if m:
        days, a, b, c = (int(x) if x else 0 for x in m.groups())
        if m.group(4) is None:  # MM:SS in Slurm when only two fields
            return days * 86400 + a * 60 + b
        return days * 86400 + a * 3600 + b * 60 + c
    if value.strip().isdigit():
        return float(value) * 60
    return None


def parse_size(value: object) -> int | None:
    """Bytes from '512m', '32g', '1.5g', '4096' (bytes). None when it is not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = _SIZE.match(value)
    if not m:
        return None
    return int(float(m.group(1)) * _SIZE_MULT[m.group(2).lower()])


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unlimited"
    s = int(seconds)
    if s % 86400 == 0 and s:
        return f"{s // 86400}d"
    if s % 3600 == 0 and s:
        return f"{s // 3600}h"
    if s % 60 == 0 and s:
        return f"{s // 60}m"
    return f"{s}s"


def iso(t: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC (``2026-11-30T08:00:00Z``); None stays None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
