"""GPU processes that belong to no ds01q job ("bare-metal" use around the queue).

From NVML's running-process lists, each process is matched to a job by its cgroup: a process of a
job runs in the job's container (the container id in its cgroup path) or in the job's own cgroup
(``…/<prefix>-<job id>``). Anything else on a GPU is foreign: shown with its user in
``ds01q status`` and, by ``security.foreign_gpu_processes``, reported only, warned (a line on the
process's terminal), or signalled (SIGTERM after the grace, SIGKILL one grace later). Root's
processes and exempt users' are only ever reported; a process of a ds01q job is never touched.
"""
from __future__ import annotations

import logging
import os
import pwd
import re
import signal
import stat
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

from ds01q.db import store
from ds01q.inventory.gpuprocs import GpuProcess
from ds01q.services.context import Context
from ds01q.services.validate import printable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcInfo:
    uid: int
    cgroup: str  # the text of /proc/<pid>/cgroup
    command: str


@dataclass
class Foreign:
    pid: int
    uid: int
    user: str
    command: str
    gpu_uuid: str
    slice_uuid: str
    used_mb: int | None
    first_seen: float
    action: str = "reported"  # reported | warned | sigterm | sigkill | exempt


def read_proc(pid: int) -> ProcInfo | None:
    """Owner, cgroup and command of a host process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            cg = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read(200).replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, StopIteration, ValueError):
        return None
    return ProcInfo(uid=uid, cgroup=cg, command=printable(cmd))


def job_markers(ctx: Context) -> tuple[set[str], set[int]]:
    """(container ids, job ids) of every job holding slices."""
    with ctx.sessions() as session:
        jobs = store.jobs_in(session, store.HOLDING)
    return {j.container for j in jobs if j.container}, {j.id for j in jobs}


_JOB_CG = re.compile(r"ds01q[\w.-]*?-(\d+)(?:\.scope)?$")


def belongs_to_job(info: ProcInfo, containers: set[str], job_ids: set[int]) -> bool:
    for line in info.cgroup.splitlines():
        path = line.split(":", 2)[-1]
        if any(c and c in path for c in containers):
            return True
        for part in path.split("/"):
            m = _JOB_CG.search(part)
            if m and int(m.group(1)) in job_ids:
                return True
    return False


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def _warn(pid: int, uid: int, text: str) -> bool:
    """Write one line to the process's terminal if it is the user's own pty; never follows anything else."""
    for fd in (2, 1, 0):
        try:
            t = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(t)
            if stat.S_ISCHR(st.st_mode) and 136 <= os.major(st.st_rdev) <= 143 and st.st_uid == uid:
                os.write(t, f"\r\nds01q: {text}\r\n".encode())
                return True
        except OSError:
            pass
        finally:
            os.close(t)
    return False


class GpuWatch:
    """Keeps the last scan; ``scan`` is called on a schedule by the daemon."""

    def __init__(self, ctx: Context, read_gpu: Callable[[], Iterable[GpuProcess]],
                 read: Callable[[int], ProcInfo | None] = read_proc,
                 kill: Callable[[int, int], None] = os.kill) -> None:
        self.ctx = ctx
        self.read_gpu = read_gpu
        self.read = read
        self.kill = kill
        self.lock = threading.Lock()
        self.seen: dict[tuple[int, str], Foreign] = {}
        self.error: str | None = None

    def latest(self) -> dict[str, Any]:
        with self.lock:
            return {"processes": [asdict(f) for f in self.seen.values()], "error": self.error}

    def scan(self) -> list[Foreign]:
        now = self.ctx.clock.now()
        sec = self.ctx.config.security
        try:
            procs = list(self.read_gpu())
        except Exception as e:
            with self.lock:
                self.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            return []
        containers, job_ids = job_markers(self.ctx)
        current: dict[tuple[int, str], Foreign] = {}
        for p in procs:
            info = self.read(p.pid)
            if info is None or belongs_to_job(info, containers, job_ids):
                continue
            key = (p.pid, p.slice_uuid)
            old = self.seen.get(key)
            user = _user(info.uid)
            current[key] = old or Foreign(pid=p.pid, uid=info.uid, user=user, command=info.command,
                                          gpu_uuid=p.gpu_uuid, slice_uuid=p.slice_uuid, used_mb=p.used_mb,
                                          first_seen=now)
            f = current[key]
            if info.uid == 0 or user in sec.foreign_gpu_exempt:
                f.action = "exempt"
                continue
            self._act(f, now, sec.foreign_gpu_processes, sec.foreign_gpu_grace_s)
        with self.lock:
            self.seen, self.error = current, None
        return list(current.values())

    def _act(self, f: Foreign, now: float, mode: str, grace: float) -> None:
        if mode == "report":
            return
        age = now - f.first_seen
        if f.action == "reported":
            _warn(f.pid, f.uid, f"process {f.pid} uses GPU {f.slice_uuid} outside the queue; submit it with "
                                f"ds01q submit/shell" + (f" (it is stopped in {grace:.0f}s)" if mode == "signal" else ""))
            f.action = "warned"
            log.warning("foreign GPU process %s of %s on %s (%s)", f.pid, f.user, f.slice_uuid, f.command)
        if mode != "signal":
            return
        sig = signal.SIGKILL if age >= 2 * grace else signal.SIGTERM if age >= grace else None
        if sig is None or (sig == signal.SIGTERM and f.action == "sigterm"):
            return
        info = self.read(f.pid)  # look again right before the signal: same owner, still no job's
        containers, job_ids = job_markers(self.ctx)
        if info is None or info.uid != f.uid or belongs_to_job(info, containers, job_ids):
            return
        try:
            self.kill(f.pid, sig)
            f.action = "sigkill" if sig == signal.SIGKILL else "sigterm"
            log.warning("sent %s to foreign GPU process %s of %s", sig.name, f.pid, f.user)
        except ProcessLookupError:
            pass


WATCHES: dict[int, GpuWatch] = {}  # by id(ctx.settings): the daemon registers its watch for `status`


def watch_for(ctx: Context) -> GpuWatch | None:
    return WATCHES.get(id(ctx.settings))
