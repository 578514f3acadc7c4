"""Creating, limiting, joining, killing and removing cgroups (process executor, cleanup).

Naming and reading live in ``ds01q.executors.cgroups``, which re-exports these.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import time

from ds01q.errors import ExecutorError
from ds01q.executors.cgroups import (  # noqa: F401
    CgroupMount,
    _dir_in,
    _hierarchy_for,
    _read,
    cgroup_mounts,
)

log = logging.getLogger("ds01q.executors.cgroups")

# Hierarchies ds01q uses; cpuset/devices/freezer/... are left alone (an empty cpuset cannot hold tasks).
_USED_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "name=systemd")


def _used_mounts(mounts: list[CgroupMount]) -> list[CgroupMount]:
    out = [m for m in mounts if m.version == 1 and m.controllers & set(_USED_CONTROLLERS)]
    out += [m for m in mounts if m.version == 2]
    return out


def _enable_v2_controllers(mount: CgroupMount, cg: str) -> None:
    """Enable memory/cpu/pids for the children of every ancestor of ``cg`` (best effort)."""
    parts = [p for p in cg.strip("/").split("/") if p]
    for i in range(len(parts)):
        parent = _dir_in(mount, "/" + "/".join(parts[:i]))
        if parent is None:
            continue
        avail = set((_read(os.path.join(parent, "cgroup.controllers")) or "").split())
        want = [c for c in ("memory", "cpu", "pids") if c in avail]
        if want:
            try:
                with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                    f.write(" ".join("+" + c for c in want))
            except OSError:
                pass


def create_cgroup(path: str, mounts: list[CgroupMount] | None = None) -> list[str]:
    """Create cgroup ``path`` in every hierarchy ds01q uses; return the directories made.

    Raises ExecutorError if it could not be made in the memory hierarchy.
    """
    mounts = cgroup_mounts() if mounts is None else mounts
    made: list[str] = []
    mem = _hierarchy_for("memory", mounts)
    if mem is None:
        raise ExecutorError("no memory cgroup hierarchy on this host")
    for m in _used_mounts(mounts):
        d = _dir_in(m, path)
        if d is None:
            continue
        if m.version == 2:
            _enable_v2_controllers(m, path)
        try:
            os.makedirs(d, exist_ok=True)
            made.append(d)
        except OSError as e:
            if m is mem:
                raise ExecutorError(f"cannot create cgroup {path}: {e.strerror}") from None
    return made


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def set_cgroup_limits(path: str, cpus: float | None, mem_bytes: int | None, pids: int | None,
                      mounts: list[CgroupMount] | None = None) -> list[str]:
    """Apply limits to cgroup ``path``; return the names of limits that could not be set."""
    mounts = cgroup_mounts() if mounts is None else mounts
    failed: list[str] = []
    if mem_bytes is not None:
        m = _hierarchy_for("memory", mounts)
        d = _dir_in(m, path) if m else None
        if not m or not d:
            failed.append("memory")
        elif m.version == 1:
            if not _write(os.path.join(d, "memory.limit_in_bytes"), str(mem_bytes)):
                failed.append("memory")
            if os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
                _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(mem_bytes))
        else:
            if not _write(os.path.join(d, "memory.max"), str(mem_bytes)):
                failed.append("memory")
            if os.path.exists(os.path.join(d, "memory.swap.max")):
                _write(os.path.join(d, "memory.swap.max"), "0")
    if cpus is not None:
        period = 100_000
        quota = max(int(cpus * period), 1000)
        m = _hierarchy_for("cpu", mounts)
        d = _dir_in(m, path) if m else None
        ok = False
        if m and d and m.version == 1:
            ok = _write(os.path.join(d, "cpu.cfs_period_us"), str(period)) and \
                _write(os.path.join(d, "cpu.cfs_quota_us"), str(quota))
        elif m and d:
            ok = _write(os.path.join(d, "cpu.max"), f"{quota} {period}")
        if not ok:
            failed.append("cpu")
    if pids is not None:
        m = _hierarchy_for("pids", mounts)
        d = _dir_in(m, path) if m else None
        if not (m and d and _write(os.path.join(d, "pids.max"), str(pids))):
            failed.append("pids")
    return failed


def join_cgroup(path: str, pid: int = 0, mounts: list[CgroupMount] | None = None) -> int:
    """Move ``pid`` (0: the caller) into ``path`` in every hierarchy where it exists; return how many."""
    mounts = cgroup_mounts() if mounts is None else mounts
    n = 0
    for m in _used_mounts(mounts):
        d = _dir_in(m, path)
        if d and os.path.isdir(d) and _write(os.path.join(d, "cgroup.procs"), str(pid)):
            n += 1
    return n


def cgroup_pids(path: str, mounts: list[CgroupMount] | None = None) -> list[int]:
    """Processes in cgroup ``path`` and its descendants (from the memory hierarchy, else any used one)."""
    mounts = cgroup_mounts() if mounts is None else mounts
    mem = _hierarchy_for("memory", mounts)
    for m in ([mem] if mem else []) + _used_mounts(mounts):
        top = _dir_in(m, path)
        if not top or not os.path.isdir(top):
            continue
        pids: list[int] = []
        for d, _, _ in os.walk(top):
            text = _read(os.path.join(d, "cgroup.procs"))
            pids.extend(int(x) for x in (text or "").split() if x.isdigit())
        return pids
    return []


def kill_cgroup(path: str, sig: int, mounts: list[CgroupMount] | None = None) -> int:
    """Send ``sig`` to every process in cgroup ``path``; return how many were signalled."""
    n = 0
    for pid in cgroup_pids(path, mounts):
        try:
            os.kill(pid, sig)
            n += 1
        except OSError:
            pass
    return n


def remove_cgroup(path: str, mounts: list[CgroupMount] | None = None, wait_s: float = 2.0) -> bool:
    """rmdir cgroup ``path`` (a leaf) in every hierarchy; True when it is gone everywhere.

    A cgroup whose last process just exited can be busy for a moment; retries up to ``wait_s``.
    """
    if not path.strip("/"):
        raise ExecutorError("refusing to remove the root cgroup")
    mounts = cgroup_mounts() if mounts is None else mounts
    dirs = [d for m in mounts if (d := _dir_in(m, path))]
    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for d in dirs:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                    left.append(d)
        if not left or time.monotonic() >= deadline:
            return not left
        dirs = left
        time.sleep(0.05)


def drop_cgroup(path: str) -> None:
    """``remove_cgroup`` for a job's cgroup that is no longer needed: one that will not go is logged, not raised."""
    try:
        remove_cgroup(path)
    except ExecutorError as e:
        log.warning("cgroup %s not removed: %s", path, e)


def remove_named(pattern: str, mounts: list[CgroupMount] | None = None, keep: frozenset[str] = frozenset()) -> int:
    """rmdir every cgroup whose own name matches the regular expression ``pattern`` (and what is left
    under it), in every hierarchy, but those named in ``keep``; one with a process in it stays (the kernel
    refuses). Returns how many directories went. For what a killed daemon left: its job cgroups, once
    their containers are gone."""
    match = re.compile(pattern).fullmatch
    gone = 0
    for m in cgroup_mounts() if mounts is None else mounts:
        for top, dirs, _ in os.walk(m.mountpoint):
            for name in [d for d in dirs if match(d) and d not in keep]:
                dirs.remove(name)  # not walked into: removed below, deepest first
                for d, _, _ in sorted(os.walk(os.path.join(top, name)), key=lambda w: -len(w[0])):
                    try:
                        os.rmdir(d)
                        gone += 1
                    except OSError:
                        pass
    return gone
