"""Deliver a signal to a running job container (Slurm's ``--signal``), never as root inside it.

``batch_only`` (``B:``): the container's main process, the batch shell, through the engine (``docker
kill --signal``; with ``init`` docker-init passes it on to its one child, the job's command). Otherwise
every process of the job: ``kill -s SIG -1`` run in the container *as the job's own uid* (the kernel spares
PID 1 and the caller), plus the engine's kill when the job itself is PID 1 (no init). A root job's
container is never exec'd into: it gets the batch-shell signal only.
"""
from __future__ import annotations

import signal as _signal
from typing import Any

import docker.errors

from ds01q.errors import ExecutorError
from ds01q.executors.base import one_line

KILL_ALL = ["/bin/sh", "-c", 'kill -s "$1" -1', "ds01q-signal"]


def signal_container(client: Any, ref: str, job_id: int, signum: int, batch_only: bool, init: bool) -> None:
    try:
        name = _signal.Signals(signum).name[3:]
    except ValueError:
        raise ExecutorError(f"signal {signum} is not a valid signal number") from None
    try:
        attrs = client.api.inspect_container(ref)
    except docker.errors.NotFound:
        raise ExecutorError(f"job {job_id}: its container is gone") from None
    except docker.errors.DockerException as e:
        raise ExecutorError(f"cannot signal job {job_id}: {one_line(e)}") from None
    if not (attrs.get("State") or {}).get("Running"):
        raise ExecutorError(f"job {job_id}: its container is not running")
    user = str((attrs.get("Config") or {}).get("User") or "")
    as_root = user.split(":")[0] in ("", "0", "root")
    try:
        if batch_only or not init or as_root:
            client.api.kill(ref, signal=signum)
        if batch_only or as_root:
            return
        ex = client.api.exec_create(ref, [*KILL_ALL, name], user=user, stdout=True, stderr=True)
        out = client.api.exec_start(ex["Id"])
        code = client.api.exec_inspect(ex["Id"]).get("ExitCode")
    except docker.errors.DockerException as e:
        raise ExecutorError(f"cannot signal job {job_id}: {one_line(e)}") from None
    if code not in (0, None):
        text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        raise ExecutorError(f"cannot signal job {job_id}: kill exited {code}: {one_line(text)}")
