"""The job supervisor: the small program each ProcessExecutor job runs under.

``SUPERVISOR_CODE`` is its source. ``spawn_supervisor`` runs it as
``python -I -S -c SUPERVISOR_CODE`` (isolated, no site, nothing of ds01q: after
setuid the child may not even be able to read the stdlib), detached in its own
session, and writes its configuration to its stdin as JSON. ``read_handshake``
then reads the one line it answers on stdout: ``ok <child pid>`` once the child
has set itself up and exec'd, or ``error <why>`` when it could not. The files it
writes (``<job_id>.pid``, ``<job_id>.rc``) are described in process.py.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import Any

from ds01q.errors import ExecutorError

__all__ = ["DEFAULT_PATH", "HANDSHAKE_TIMEOUT_S", "SUPERVISOR_CODE", "read_handshake", "spawn_supervisor"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HANDSHAKE_TIMEOUT_S = 30.0

SUPERVISOR_CODE = r'''
import json, os, signal, stat, sys, time
# Everything the child needs is imported now: after setuid it may not be able to read the stdlib.
import ctypes, resource, warnings

def starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0

def put(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)

def join(files, required):
    """Move this process into each cgroup.procs file; only the first ``required`` must succeed."""
    for i, name in enumerate(files):
        try:
            with open(name, "w") as f:
                f.write("0")
        except OSError:
            if i < required:
                raise

def kill_leftovers(child, files):
    try:
        os.killpg(child, signal.SIGKILL)
    except OSError:
        pass
    for _ in range(50):
        pids = []
        for name in files:
            try:
                with open(name) as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:
                pass
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)

cfg = json.loads(sys.stdin.buffer.read())
job, state = cfg["job_id"], cfg["state_dir"]
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
join(cfg["supervisor_procs"], 0)
r, w = os.pipe()
child = os.fork()
if child == 0:
    stage = "setup"
    try:
        os.close(r)
        os.setsid()
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
            signal.signal(s, signal.SIG_DFL)
        stage = "cgroup"
        join(cfg["job_procs"], 1 if cfg["job_procs"] else 0)
        if cfg["rlimit_as"]:
            resource.setrlimit(resource.RLIMIT_AS, (cfg["rlimit_as"], cfg["rlimit_as"]))
        stage = "no_new_privs"
        if ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        stage = "uid %d gid %d" % (cfg["uid"], cfg["gid"])
        if cfg["setuid"]:
            os.setgroups([])
            os.setgid(cfg["gid"])
            os.setuid(cfg["uid"])
        os.umask(0o022)
        stage = "workdir " + cfg["workdir"]
        os.chdir(cfg["workdir"])
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        out = err = null
        mode = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
        if cfg.get("truncate"):
            mode |= os.O_TRUNC
        for key in ("output", "error"):
            if cfg.get(key):
                stage = key + " file " + cfg[key]
                fd = os.open(cfg[key], mode, 0o644)
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(0, "not a regular file")
                os.set_blocking(fd, True)
                if key == "output":
                    out = err = fd
                else:
                    err = fd
        os.dup2(out, 1)
        os.dup2(err, 2)
    except BaseException as e:
        os.write(w, ("E%s: %s" % (stage, getattr(e, "strerror", None) or e)).encode())
        os._exit(126)
    argv = cfg["argv"]
    try:
        os.execvpe(argv[0], argv, cfg["env"])
    except OSError as e:
        os.write(2, ("ds01q: cannot execute %s: %s\n" % (argv[0], e.strerror)).encode())
        os.write(w, b"X")
        os._exit(127)
os.close(w)
put(os.path.join(state, "%d.pid" % job), {
    "job_id": job, "pid": os.getpid(), "start": starttime(os.getpid()),
    "child": child, "child_start": starttime(child), "cgroup": cfg["cgroup"], "uid": cfg["uid"]})
msg = b""
while True:
    chunk = os.read(r, 4096)
    if not chunk:
        break
    msg += chunk
os.close(r)
if msg.startswith(b"E"):
    os.waitpid(child, 0)
    os.unlink(os.path.join(state, "%d.pid" % job))
    sys.stdout.write("error " + msg[1:].decode(errors="replace") + "\n")
    sys.exit(1)
sys.stdout.write("ok %d\n" % child)
sys.stdout.flush()
null = os.open("/dev/null", os.O_RDWR)
os.dup2(null, 1)
os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)
kill_leftovers(child, cfg["job_procs"])
_, status, ru = os.wait4(child, 0)
code = os.waitstatus_to_exitcode(status)
put(os.path.join(state, "%d.rc" % job), {
    "exit_code": code if code >= 0 else 128 - code, "signal": -code if code < 0 else None,
    "finished_at": time.time(), "cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_bytes": ru.ru_maxrss * 1024})
'''


def spawn_supervisor(python: str, cfg: dict[str, Any], err_path: str) -> subprocess.Popen[bytes]:
    """Start the supervisor for ``cfg`` with its stderr appended to ``err_path``."""
    try:
        with open(err_path, "ab") as err:
            proc = subprocess.Popen(
                [python, "-I", "-S", "-c", SUPERVISOR_CODE],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, close_fds=True, cwd="/", env={"PATH": DEFAULT_PATH},
            )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(cfg).encode())
        proc.stdin.close()
    except OSError as e:
        raise ExecutorError(f"cannot start the job supervisor: {e.strerror or e}") from None
    return proc


def read_handshake(proc: subprocess.Popen[bytes]) -> str:
    """The supervisor's answer line ("ok <pid>" or "error <why>"), "" if it exited without one."""
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            proc.wait()
            raise ExecutorError("the job supervisor did not answer within 30 s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    proc.stdout.close()
    return buf.decode(errors="replace").strip()
