"""Reading one value of a config mapping: its type, a duration, a size, a choice. Each error is one
line that names the key path and what is allowed."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ds01q.errors import ConfigError
from ds01q.units import parse_duration, parse_size

__all__ = ["choice", "duration", "get", "mapping", "positive", "size"]


def get(d: dict[str, Any], key: str, path: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{path}.{key}: {v!r} is not a {names}".lstrip("."))
    return v


def _parsed(d: dict[str, Any], key: str, path: str, parse: Callable[[Any], Any], like: str) -> Any:
    """``parse(d[key])``; None when the key is absent; a ConfigError saying what is allowed when it cannot be read."""
    if d.get(key) is None:
        return None
    v = parse(d[key])
    if v is None:
        raise ConfigError(f"{path}.{key}: {d[key]!r} is not {like}".lstrip("."))
    return v


def duration(d: dict[str, Any], key: str, path: str) -> float | None:
    return _parsed(d, key, path, parse_duration, "a duration like 30m, 24h, 2d")  # type: ignore[no-any-return]


def size(d: dict[str, Any], key: str, path: str) -> int | None:
    return _parsed(d, key, path, parse_size, "a size like 512m, 32g")  # type: ignore[no-any-return]


def mapping(d: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    v = d.get(key) or {}
    if not isinstance(v, dict):
        raise ConfigError(f"{path}{key}: must be a mapping, not {type(v).__name__}")
    return v


def choice(d: dict[str, Any], key: str, path: str, allowed: tuple[str, ...]) -> str:
    v = get(d, key, path, str, allowed[0])
    if v not in allowed:
        raise ConfigError(f"{path}.{key}: {v!r} is not allowed (allowed: {', '.join(allowed)})")
    return v  # type: ignore[no-any-return]


def positive(d: dict[str, Any], key: str, path: str) -> float | None:
    v = get(d, key, path, float, None)
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{path}.{key}: {v!r} must be a positive number")
    return v  # type: ignore[no-any-return]
