"""The executor contract: what the daemon hands an executor and what it gets back.

An executor runs one job at a time per ``job_id`` and knows nothing about the
queue. Its life cycle for one job::

    launch(spec) -> Handle        the container/process runs (or ExecutorError, nothing left behind)
    sample(handle) -> Usage       while it runs; None once it is gone
    poll(handle) -> ExitInfo      None while running, then the exit code, OOM flag and final usage
    stop(handle, grace_s)         SIGTERM, SIGKILL after grace; idempotent
    signal(handle, sig)           one signal to the running job (preemption, ``--signal``)
    remove(handle)                after poll returned ExitInfo; idempotent

``containers()`` lists every job container of this executor, running or exited, with
its launch attempt (recovery and the reconcile loop); ``running()`` only the live ones;
``watch(on_exit)`` calls back when a job dies, so the daemon need not poll
hard. Implementations: ``DockerExecutor`` (docker.py) and ``ProcessExecutor``
(process.py).
"""
from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ds01q.errors import ExecutorError
from ds01q.executors.fsuser import as_fs_user
from ds01q.types import Usage

__all__ = [
    "BATCH_WRAPPER",
    "BATCH_WRAPPER_SPLIT",
    "GPU_RUNTIMES",
    "KEEPALIVE_COMMAND",
    "Executor",
    "ExitInfo",
    "Found",
    "Handle",
    "LaunchSpec",
    "Usage",
    "create_output_file",
    "error_file",
    "job_environment",
    "one_line",
]

GPU_RUNTIMES = ("nvidia", "none")

# Batch jobs: the user's command, with stdout+stderr appended to $DS01Q_OUTPUT.
# `exec` keeps the user's program as the process that receives signals.
BATCH_WRAPPER = ["/bin/sh", "-c", 'exec "$@" >>"$DS01Q_OUTPUT" 2>&1', "ds01q-job"]
# ... with ``--error`` naming another file: stdout to $DS01Q_OUTPUT, stderr to $DS01Q_ERROR.
BATCH_WRAPPER_SPLIT = ["/bin/sh", "-c", 'exec "$@" >>"$DS01Q_OUTPUT" 2>>"$DS01Q_ERROR"', "ds01q-job"]

# Interactive jobs: an idle init; shells are exec'd into it (as the job's user). It exits 0 on
# SIGTERM: the state an interactive job ends in comes from its stop outcome, never from here.
KEEPALIVE_COMMAND = [
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM INT HUP; while :; do sleep 3600 & wait $!; done",
]


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one job. Built by the caller after its allocation committed.

    ``env`` is the job's environment as the caller built it (DS01Q_*, SLURM_*,
    HOME, ...); the executor adds ``NVIDIA_VISIBLE_DEVICES`` and, unless
    given, ``CUDA_VISIBLE_DEVICES`` (see ``job_environment``).
    ``output_path`` receives stdout+stderr of a batch job; it is created owned
    by ``uid:gid``. None for interactive jobs (or to keep output in the
    executor's own log). ``error_path`` (Slurm's ``--error``), when set and not
    the output file, receives stderr instead, created the same way. ``truncate``
    empties both files when they are created (Slurm's ``--open-mode=truncate``,
    its default for a job's first run); otherwise they are appended to. ``mounts`` are extra ``(host_path, container_path,
    "ro"|"rw")`` bind mounts chosen by the daemon (never by the user), e.g. the
    spooled job script; the process executor ignores them (it uses host paths).
    """

    job_id: int
    name: str
    user: str
    uid: int
    gid: int
    group: str
    image: str
    command: list[str]
    workdir: str
    env: dict[str, str]
    slices: list[str]
    gpu_runtime: str = "none"
    cpus: float | None = None
    mem_bytes: int | None = None
    pids_limit: int | None = None
    shm_bytes: int | None = None
    output_path: str | None = None
    error_path: str | None = None
    truncate: bool = False
    cgroup_parent: str | None = None
    interactive: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    stop_grace_s: float = 10
    mounts: list[tuple[str, str, str]] = field(default_factory=list)
    # the job's launch attempt: (instance, job_id, attempt) names the container, so launching the
    # same attempt again finds the container already made instead of starting a second one
    attempt: int = 0


@dataclass(frozen=True)
class Handle:
    """A launched job: ``ref`` is the container id (Docker) or the supervisor pid (process)."""

    job_id: int
    ref: str


@dataclass(frozen=True)
class ExitInfo:
    """How a job ended. ``exit_code`` is None when it is unknown (the job vanished).

    Signals follow the shell convention: 128 + signal number (137 = SIGKILL).
    ``cpu_s`` and ``max_rss_bytes`` are None when no measurement was possible.
    """

    exit_code: int | None
    oom_killed: bool
    finished_at: float | None
    cpu_s: float | None
    max_rss_bytes: int | None
    error: str = ""
    started_at: float | None = None  # when the container itself started (accounting), if known


@dataclass(frozen=True)
class Found:
    """One job container as ``containers()`` sees it: ``exit`` is None while it runs.

    ``started`` is False for a container that was created but never started; ``created_at`` is when it was
    created (epoch seconds), where the executor knows it."""

    handle: Handle
    attempt: int
    exit: ExitInfo | None
    started: bool = True
    created_at: float | None = None


@runtime_checkable
class Executor(Protocol):
    def launch(self, spec: LaunchSpec) -> Handle:
        """Start the job, or return the container of this ``(job_id, attempt)`` if it already
        exists (running or exited): one attempt never runs twice. Raises ExecutorError and
        cleans up anything half-made."""
        ...

    def poll(self, handle: Handle) -> ExitInfo | None:
        """None while the job runs; its ExitInfo once it has ended."""
        ...

    def stop(self, handle: Handle, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``. Idempotent; returns once it is stopped."""
        ...

    def remove(self, handle: Handle) -> None:
        """Forget the job and free what it held (after poll returned ExitInfo). Idempotent."""
        ...

    def signal(self, handle: Handle, sig: int, batch_only: bool = True) -> None:
        """Send signal number ``sig`` to the running job: its main process (``batch_only``, Slurm's ``B:``)
        or every process of the job. It is not waited for. Raises ExecutorError when the job is not
        running or cannot be signalled."""
        ...

    def sample(self, handle: Handle) -> Usage | None:
        """Current usage of a running job; None if it is gone."""
        ...

    def running(self) -> dict[int, Handle]:
        """Every job of this executor that is alive now, by job id."""
        ...

    def containers(self) -> list[Found]:
        """Every job container of this executor, running or exited (not yet removed).
        Raises ExecutorError when the executor cannot be reached."""
        ...

    def watch(self, on_exit: Callable[[int], None], on_lost: Callable[[str], None] | None = None) -> None:
        """Call ``on_exit(job_id)`` from a background thread when a job dies, and ``on_lost(error)`` when
        the executor loses its engine (the event stream broke: the engine may be restarting, and what it
        does to its containers meanwhile is not the jobs' doing). Never raises."""
        ...

    def close(self) -> None:
        """Stop the watcher and release resources; running jobs keep running."""
        ...


def watch_thread(current: threading.Thread | None, closed: threading.Event, target: Callable[[], None],
                 name: str) -> threading.Thread:
    """An executor's watch thread: ``current`` while it runs, else a new one started (``closed`` cleared)."""
    if current is not None and current.is_alive():
        return current
    closed.clear()
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def notify_exit(callback: Callable[[int], None] | None, job_id: int) -> None:
    """Tell the loop (the ``on_exit`` given to ``watch``) that ``job_id``'s run exited; its failure is logged."""
    if callback is None:
        return
    try:
        callback(job_id)
    except Exception:
        logging.getLogger("ds01q.executors").exception("on_exit callback failed for job %s", job_id)


def one_line(text: object, limit: int = 300) -> str:
    """Squash an error text to one line of at most ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def job_environment(spec: LaunchSpec) -> dict[str, str]:
    """The job's environment: ``spec.env`` plus the GPU visibility variables the executor owns.

    ``NVIDIA_VISIBLE_DEVICES`` is always the comma-joined slice UUIDs, or
    ``void`` for a CPU-only job, so an image that sets ``all`` cannot see
    every GPU. ``CUDA_VISIBLE_DEVICES`` defaults to the same list, and is
    forced to the empty string for a CPU-only job.
    """
    if spec.gpu_runtime not in GPU_RUNTIMES:
        raise ExecutorError(f"unknown gpu_runtime '{spec.gpu_runtime}' (allowed: {', '.join(GPU_RUNTIMES)})")
    env = {str(k): str(v) for k, v in spec.env.items()}
    joined = ",".join(spec.slices)
    env["NVIDIA_VISIBLE_DEVICES"] = joined if spec.slices else "void"
    if spec.slices:
        env.setdefault("CUDA_VISIBLE_DEVICES", joined)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


_TOUCH_AS_USER = 'umask 022 && : >>"$1"'
_TRUNCATE_AS_USER = 'umask 022 && : >"$1"'
_AS_USER_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC


def error_file(spec: LaunchSpec) -> str | None:
    """The separate stderr file of a batch job, or None when stderr goes with stdout."""
    if spec.interactive or not spec.output_path or not spec.error_path or spec.error_path == spec.output_path:
        return None
    return spec.error_path


def create_output_file(path: str, uid: int, gid: int, truncate: bool = False) -> None:
    """Create ``path`` (if missing) owned by ``uid:gid``, mode 0644, without following tricks.

    As root, the file is opened with the user's file-system rights (``fsuser.as_fs_user``: this thread
    only, no supplementary group, no file capability; a short-lived child running as the user where
    that is not available), so a symlink or a directory the user controls cannot make root write or
    chown anything the user could not. An existing file is kept (appended to), or emptied with
    ``truncate`` (with the user's rights only). A FIFO is refused, not waited on.
    """
    if not os.path.isabs(path):
        raise ExecutorError(f"output path '{path}' is not absolute")
    if os.geteuid() == 0 and uid != 0:  # with the user's rights only
        if as_fs_user is not None:  # in this thread
            try:
                with as_fs_user(uid, gid):
                    os.close(os.open(path, _AS_USER_FLAGS | (os.O_TRUNC if truncate else 0), 0o644))
            except OSError as e:
                raise ExecutorError(f"cannot create output file {path} as uid {uid}: {e.strerror}") from None
            return
        try:
            res = subprocess.run(
                ["/bin/sh", "-c", _TRUNCATE_AS_USER if truncate else _TOUCH_AS_USER, "ds01q-output", path],
                user=uid, group=gid, extra_groups=[], env={"PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                timeout=30, check=False, cwd="/",
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise ExecutorError(f"cannot create output file {path}: {one_line(e)}") from None
        if res.returncode != 0:
            why = one_line(res.stderr.decode(errors="replace")) or f"exit {res.returncode}"
            raise ExecutorError(f"cannot create output file {path} as uid {uid}: {why}")
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if truncate:
        flags |= os.O_TRUNC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        raise ExecutorError(f"cannot create output file {path}: {e.strerror}") from None
    try:
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
    except OSError as e:
        raise ExecutorError(f"cannot chown output file {path}: {e.strerror}") from None
    finally:
        os.close(fd)
