"""Interactive shells in a job's container: TTY execs for the daemon's terminal relay.

``ExecSessions`` starts an exec with a TTY and hands back its raw socket, resizes
its terminal and reads its exit code. It keeps each exec's HTTP response (and so
the socket) alive until the exec is seen to have ended or the executor closes.
"""
from __future__ import annotations

import socket
import threading
from typing import Any

import docker.errors

from ds01q.errors import ExecutorError
from ds01q.executors.docker_api import api_error

__all__ = ["ExecSessions"]


class ExecSessions:
    """The TTY execs of one DockerExecutor, on its docker-py client."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._execs: dict[str, Any] = {}  # exec id -> socket object kept alive while in use

    def start(self, ref: str, job_id: int, cmd: list[str], user: str, env: dict[str, str],
              workdir: str) -> tuple[socket.socket, str]:
        """Start ``cmd`` with a TTY in container ``ref`` (job ``job_id``); return (raw socket, exec id)."""
        try:
            created = self.client.api.exec_create(ref, cmd, stdin=True, tty=True, user=user,
                                                  environment=dict(env), workdir=workdir)
            exec_id = created["Id"]
            sockio = self.client.api.exec_start(exec_id, socket=True, tty=True)
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot start a shell in job {job_id}: {api_error(e)}") from None
        with self._lock:
            self._execs[exec_id] = sockio  # keeps the HTTP response (and so the socket) alive
        return getattr(sockio, "_sock", sockio), exec_id

    def resize(self, exec_id: str, rows: int, cols: int) -> None:
        try:
            self.client.api.exec_resize(exec_id, height=rows, width=cols)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code not in (409, 500):  # the exec has already ended
                raise ExecutorError(f"cannot resize terminal: {api_error(e)}") from None

    def exit_code(self, exec_id: str) -> int | None:
        """The exit code of a finished exec; None while it runs (or if unknown)."""
        try:
            info = self.client.api.exec_inspect(exec_id)
        except docker.errors.NotFound:
            self.release(exec_id)
            return None
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot inspect exec {exec_id[:12]}: {api_error(e)}") from None
        if info.get("Running"):
            return None
        self.release(exec_id)
        code = info.get("ExitCode")
        return int(code) if code is not None else None

    def release(self, exec_id: str) -> None:
        """Close the socket of ``exec_id`` and forget it."""
        with self._lock:
            sockio = self._execs.pop(exec_id, None)
        if sockio is not None:
            try:
                sockio.close()
            except OSError:
                pass

    def close(self) -> None:
        for exec_id in list(self._execs):
            self.release(exec_id)
