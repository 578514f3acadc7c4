"""Reading /proc for the process executor, where no cgroup says what a job is.

A pid is checked against its start time (``/proc/<pid>/stat`` field 22, clock
ticks after boot) so a reused pid is never signalled or mistaken for a live
job; without a cgroup, a job's usage is that of its process group.
"""
from __future__ import annotations

import os
from typing import Any

from ds01q.executors.base import Usage

__all__ = ["pgroup_usage", "pid_alive", "to_int"]


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is field 3, the state)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def to_int(value: Any, default: int = -1) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def pid_alive(pid: Any, start: Any) -> bool:
    """True if ``pid`` runs, is no zombie and started at ``start`` (clock ticks after boot)."""
    pid, start = to_int(pid), to_int(start)
    st = _proc_stat(pid) if pid > 0 else None
    return bool(st) and st[0] not in ("Z", "X") and to_int(st[19]) == start  # type: ignore[index]


def pgroup_usage(pgid: int) -> Usage | None:
    """CPU and resident memory of the processes in process group ``pgid`` (no cgroup available)."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    cpu, rss, found = 0, 0, False
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _proc_stat(int(name))
        if not st or int(st[2]) != pgid or st[0] == "Z":
            continue
        found = True
        cpu += sum(int(x) for x in st[11:15])  # utime stime cutime cstime
        rss += int(st[21]) * page
    return Usage(cpu_s=cpu / tick, mem_bytes=rss, max_rss_bytes=None) if found else None
