"""Mount the working directory that was checked, not whatever its path names at mount time.

At launch the job's workdir is opened component by component without following symlinks and
must belong to the job's user (``ds01q.safefs.open_dir``). That descriptor is bind-mounted (the
kernel follows ``/proc/self/fd/N`` to the very directory held, never to a path) on a root-only
staging point, and Docker mounts the staging point. A workdir swapped for a symlink after submit
is refused; one swapped after the check still mounts the directory that was checked. The staging
mount is dropped once the container has started (the container keeps its own copy).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import tempfile

from ds01q.errors import ExecutorError
from ds01q.safefs import UnsafePath, open_dir

log = logging.getLogger(__name__)

MS_BIND = 4096
MNT_DETACH = 2
DEFAULT_ROOT = "/run/ds01q/held"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class HeldDir:
    """A checked workdir; ``source`` is what to hand Docker as the bind mount's source."""

    def __init__(self, workdir: str, uid: int, job_id: int, root: str = DEFAULT_ROOT) -> None:
        self.staging: str | None = None
        try:
            fd = open_dir(workdir, owner=uid if uid != 0 else None)
        except (UnsafePath, FileNotFoundError) as e:
            raise ExecutorError(f"job {job_id}: working directory refused: {e}") from None
        try:
            if os.geteuid() != 0:  # unprivileged (tests of the executor alone): the check is all we can do
                self.source = workdir
                return
            os.makedirs(root, mode=0o700, exist_ok=True)
            os.chmod(root, 0o700)
            # a fresh name per launch: two daemons on one host (tests, a second instance) both have a job 1
            staging = tempfile.mkdtemp(prefix=f"{job_id}-", dir=root)
            if _libc.mount(f"/proc/self/fd/{fd}".encode(), staging.encode(), None, MS_BIND, None) != 0:
                err = ctypes.get_errno()
                os.rmdir(staging)
                raise ExecutorError(f"job {job_id}: cannot hold working directory {workdir}: {os.strerror(err)}")
            self.staging = self.source = staging
        finally:
            os.close(fd)

    @staticmethod
    def _drop(staging: str) -> None:
        if os.path.lexists(staging):  # (ismount cannot see a bind mount within one file system)
            _libc.umount2(staging.encode(), MNT_DETACH)
        try:
            os.rmdir(staging)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("staging %s not removed: %s", staging, e.strerror)

    @classmethod
    def drop_stale(cls, root: str) -> None:
        """Drop every staging point under ``root`` (one daemon's own): left by a crash between a launch's
        hold and its release. A started container keeps its own mount; only the staging point goes."""
        if os.geteuid() != 0:
            return
        try:
            names = os.listdir(root)
        except FileNotFoundError:
            return
        for name in names:
            cls._drop(os.path.join(root, name))

    def release(self) -> None:
        if self.staging:
            self._drop(self.staging)
            self.staging = None


def check_output(workdir: str, output_path: str, uid: int) -> None:
    """Refuse a launch whose output file is not the user's own regular file inside the workdir
    (another user may have pre-created a predictable name in a shared directory such as /tmp)."""
    from ds01q.safefs import open_user_file

    rel = os.path.relpath(output_path, workdir)
    try:
        fd = open_dir(workdir)
        try:
            f = open_user_file(fd, rel, uid)
        finally:
            os.close(fd)
    except (UnsafePath, FileNotFoundError) as e:
        raise ExecutorError(f"output file refused: {e}") from None
    if f is None:
        raise ExecutorError(f"output file {output_path} was not created")
    os.close(f)
