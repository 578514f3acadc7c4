"""Cgroup naming (ds01-infra compatible) and reading/creating cgroups on v1, v2 and hybrid hosts.

Naming. Each user's jobs go to ``<root>.slice/<root>-<group>.slice/<root>-<group>-<user>.slice``.
With Docker's systemd driver the cgroup parent is only the leaf slice name,
because systemd nests on dashes; with the cgroupfs driver it is the path.
Names are sanitised like ds01-infra's ``username_utils``: drop ``@domain``,
``.`` and any other character outside ``[A-Za-z0-9_:]`` become ``_`` (dashes
too, since they would nest), runs of ``_`` collapse, and names longer than 32
characters are cut to 27 plus ``_`` and 4 hex digits of the md5 of the original.

Paths. A *cgroup path* is a path inside the hierarchy, as in ``/proc/<pid>/cgroup``
(``/docker/<id>``). It is mapped to a directory per hierarchy through
``/proc/self/mountinfo``: on v1 each controller has its own mount, on v2 one
mount holds all, and on hybrid hosts v1 controllers win over the v2 mount.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from ds01q.errors import ExecutorError
from ds01q.cgroupnames import SCHEMES, sanitize_name, slice_name, slice_path  # noqa: F401 (re-exported)
from ds01q.types import Usage

__all__ = [
    "CgroupMount",
    "cgroup_mounts",
    "cgroup_parent",
    "cgroup_pids",
    "cgroupfs_parent",
    "controller_dir",
    "create_cgroup",
    "join_cgroup",
    "kill_cgroup",
    "normalize_parent",
    "pid_cgroups",
    "read_cgroup_usage",
    "read_cgroup_usage_path",
    "read_oom_kills",
    "remove_cgroup",
    "drop_cgroup",
    "remove_named",
    "sanitize_name",
    "set_cgroup_limits",
    "slice_name",
    "slice_path",
]

# ------------------------------------------------------------------ naming

def cgroupfs_parent(root: str, group: str, user: str, scheme: str = "ds01q") -> str:
    """The cgroupfs form: ``/ds01q.slice/ds01q-<group>.slice/ds01q-<group>-<user>.slice``."""
    return slice_path(slice_name(root, group, user, scheme))


def cgroup_parent(driver: str, root: str, group: str, user: str, scheme: str = "ds01q") -> str:
    """Docker's ``cgroup_parent`` for a user's jobs under the engine's cgroup driver."""
    if driver == "systemd":
        return slice_name(root, group, user, scheme)
    if driver == "cgroupfs":
        return cgroupfs_parent(root, group, user, scheme)
    raise ExecutorError(f"unknown cgroup driver '{driver}' (allowed: systemd, cgroupfs)")


def normalize_parent(driver: str, parent: str) -> str:
    """Turn a parent written for either driver into the form ``driver`` needs."""
    if driver == "systemd":
        leaf = parent.rstrip("/").rsplit("/", 1)[-1]
        if not leaf.endswith(".slice"):
            raise ExecutorError(f"cgroup parent '{parent}' must be a .slice with the systemd cgroup driver")
        return leaf
    if "/" not in parent and parent.endswith(".slice"):
        return slice_path(parent)
    return parent if parent.startswith("/") else "/" + parent


# ------------------------------------------------------------------ mounts and paths

@dataclass(frozen=True)
class CgroupMount:
    mountpoint: str
    root: str  # the hierarchy path mounted there (usually "/")
    version: int  # 1 or 2
    controllers: frozenset[str]  # v1: mount options such as memory, cpu, name=systemd; v2: cgroup.controllers


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


MOUNTS_FRESH_S = 10.0  # how long this process's own cgroup mounts are taken as read
_own_mounts: tuple[float, list[CgroupMount]] | None = None


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[CgroupMount]:
    """All cgroup v1 and v2 mounts of this mount namespace. This process's own are read again at most
    every ``MOUNTS_FRESH_S`` (its mountinfo lists every container's mounts too: long to read on a busy
    engine, at each launch, exit and removal; cgroup hierarchies are mounted at boot)."""
    global _own_mounts
    own = mountinfo == "/proc/self/mountinfo"
    now = time.monotonic()
    if own and _own_mounts is not None and 0 <= now - _own_mounts[0] < MOUNTS_FRESH_S:
        return list(_own_mounts[1])
    out = _read_cgroup_mounts(mountinfo)
    if own:
        _own_mounts = (now, out)
    return list(out)


def _read_cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    out: list[CgroupMount] = []
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, mountpoint, root = tail[0], _unescape(fields[4]), _unescape(fields[3])
        if fstype == "cgroup":
            opts = frozenset(o for o in tail[2].split(",") if o not in ("rw", "ro"))
            out.append(CgroupMount(mountpoint, root, 1, opts))
        elif fstype == "cgroup2":
            try:
                with open(os.path.join(mountpoint, "cgroup.controllers")) as f:
                    ctrl = frozenset(f.read().split())
            except OSError:
                ctrl = frozenset()
            out.append(CgroupMount(mountpoint, root, 2, ctrl))
    return out


def _hierarchy_for(controller: str, mounts: list[CgroupMount]) -> CgroupMount | None:
    """The mount that accounts ``controller``: a v1 mount naming it, else the v2 mount.

    On v2, ``cpu`` time (cpu.stat) is always there; ``memory`` and ``pids``
    need the controller to be available.
    """
    for m in mounts:
        if m.version == 1 and controller in m.controllers:
            return m
    for m in mounts:
        if m.version == 2 and (controller in m.controllers or controller in ("cpu", "cpuacct")):
            return m
    return None


def _dir_in(mount: CgroupMount, path: str) -> str | None:
    """The directory of cgroup ``path`` in ``mount``, or None if it lies outside the mount."""
    path = "/" + path.strip("/")
    root = "/" + mount.root.strip("/")
    if root != "/":
        if path != root and not path.startswith(root + "/"):
            return None
        path = path[len(root):] or "/"
    return os.path.join(mount.mountpoint, path.lstrip("/")).rstrip("/") or "/"


def controller_dir(controller: str, path: str, mounts: list[CgroupMount] | None = None) -> str | None:
    """The directory of cgroup ``path`` in the hierarchy that accounts ``controller``."""
    mounts = cgroup_mounts() if mounts is None else mounts
    m = _hierarchy_for(controller, mounts)
    return _dir_in(m, path) if m else None


def _as_cgroup_path(path: str, mounts: list[CgroupMount]) -> str:
    """Accept a cgroup path or a directory under a cgroup mount; return the cgroup path."""
    for m in sorted(mounts, key=lambda m: len(m.mountpoint), reverse=True):
        mp = m.mountpoint.rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            rel = path[len(mp):]
            return "/" + "/".join(p for p in (m.root.strip("/"), rel.strip("/")) if p)
    return "/" + path.strip("/")


def pid_cgroups(pid: int) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` as {controller: cgroup path}; the v2 entry has key ``""``."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            out[""] = path
        for c in ctrls.split(","):
            if c:
                out[c] = path
    return out


# ------------------------------------------------------------------ reading

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    s = _read(path)
    try:
        return int(s.strip()) if s is not None else None
    except ValueError:
        return None


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def _cpu_seconds(cpu_dir: str, version: int) -> float | None:
    if version == 1:
        ns = _read_int(os.path.join(cpu_dir, "cpuacct.usage"))
        return ns / 1e9 if ns is not None else None
    stat = _kv(_read(os.path.join(cpu_dir, "cpu.stat")))
    return stat["usage_usec"] / 1e6 if "usage_usec" in stat else None


def _memory(mem_dir: str, version: int) -> tuple[int, int | None] | None:
    """(current bytes without inactive file cache, peak bytes or None)."""
    if version == 1:
        cur = _read_int(os.path.join(mem_dir, "memory.usage_in_bytes"))
        peak = _read_int(os.path.join(mem_dir, "memory.max_usage_in_bytes"))
        inactive = _kv(_read(os.path.join(mem_dir, "memory.stat"))).get("total_inactive_file", 0)
    else:
        cur = _read_int(os.path.join(mem_dir, "memory.current"))
        peak = _read_int(os.path.join(mem_dir, "memory.peak"))
        inactive = _kv(_read(os.path.join(mem_dir, "memory.stat"))).get("inactive_file", 0)
    if cur is None:
        return None
    return max(cur - inactive, 0), peak


def _usage(mounts: list[CgroupMount], cpu_path: str | None, mem_path: str | None) -> Usage | None:
    cpu_m, mem_m = _hierarchy_for("cpuacct", mounts), _hierarchy_for("memory", mounts)
    cpu_dir = _dir_in(cpu_m, cpu_path) if cpu_m and cpu_path else None
    mem_dir = _dir_in(mem_m, mem_path) if mem_m and mem_path else None
    cpu = _cpu_seconds(cpu_dir, cpu_m.version) if cpu_dir and cpu_m else None
    mem = _memory(mem_dir, mem_m.version) if mem_dir and mem_m else None
    if cpu is None and mem is None:
        return None
    cur, peak = mem if mem is not None else (0, None)
    return Usage(cpu_s=cpu if cpu is not None else 0.0, mem_bytes=cur, max_rss_bytes=peak)


def read_cgroup_usage_path(path: str, mounts: list[CgroupMount] | None = None) -> Usage | None:
    """Usage of the cgroup at ``path`` (a cgroup path or a directory under a cgroup mount).

    CPU from ``cpuacct.usage`` (v1) or ``cpu.stat usage_usec`` (v2); memory from
    ``memory.usage_in_bytes``/``memory.current`` minus inactive file cache, and
    the peak from ``memory.max_usage_in_bytes``/``memory.peak`` where the kernel
    has it. None when the cgroup does not exist (any more).
    """
    mounts = cgroup_mounts() if mounts is None else mounts
    cg = _as_cgroup_path(path, mounts)
    return _usage(mounts, cg, cg)


def read_cgroup_usage(pid: int) -> Usage | None:
    """Usage of the cgroup that ``pid`` is in, found through ``/proc/<pid>/cgroup``."""
    cgs = pid_cgroups(pid)
    if not cgs:
        return None
    mounts = cgroup_mounts()
    cpu_m, mem_m = _hierarchy_for("cpuacct", mounts), _hierarchy_for("memory", mounts)
    cpu_key = "cpuacct" if cpu_m and cpu_m.version == 1 else ""
    mem_key = "memory" if mem_m and mem_m.version == 1 else ""
    return _usage(mounts, cgs.get(cpu_key), cgs.get(mem_key))


def read_oom_kills(path: str, mounts: list[CgroupMount] | None = None) -> int | None:
    """OOM kills counted in the cgroup: ``memory.events oom_kill`` (v2, includes
    descendants) or ``memory.oom_control oom_kill`` (v1, this cgroup only)."""
    mounts = cgroup_mounts() if mounts is None else mounts
    m = _hierarchy_for("memory", mounts)
    d = _dir_in(m, _as_cgroup_path(path, mounts)) if m else None
    if not m or not d:
        return None
    name = "memory.oom_control" if m.version == 1 else "memory.events"
    return _kv(_read(os.path.join(d, name))).get("oom_kill")


# Creating and removing cgroups (re-exported; defined in cgroup_admin to keep this module small).
from ds01q.executors.cgroup_admin import (  # noqa: E402
    cgroup_pids,
    create_cgroup,
    drop_cgroup,
    join_cgroup,
    kill_cgroup,
    remove_cgroup,
    remove_named,
    set_cgroup_limits,
)
