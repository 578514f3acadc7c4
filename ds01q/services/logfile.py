"""Reading a job's output for ``ds01q logs``: never as a path root would follow.

The output is a name relative to the job's working directory (submit refuses anything else).
The directory is reached component by component without following a symlink, and the file must
be a regular file owned by the job's user, opened non-blocking (a FIFO cannot pin a thread).
"""
from __future__ import annotations

import os

from ds01q.db.models import Job
from ds01q.errors import RequestError
from ds01q.safefs import UnsafePath, open_dir, open_user_file


def read_output(job: Job, offset: int, limit: int, error: bool = False) -> bytes:
    """Up to ``limit`` bytes of the job's output (with ``error``: its ``--error`` file, which is the output
    file when none was named) from ``offset``; b"" when there is none (yet)."""
    path = (job.error_path or job.output_path) if error else job.output_path
    if not path or not job.workdir:
        return b""
    rel = os.path.relpath(path, job.workdir)
    if rel.startswith("..") or os.path.isabs(rel):
        raise RequestError(f"job {job.id}'s output {path} is outside its working directory; "
                           "it is not read")
    try:
        dir_fd = open_dir(job.workdir)
    except (UnsafePath, FileNotFoundError) as e:
        raise RequestError(f"job {job.id}'s output is not read: {e}") from None
    try:
        fd = open_user_file(dir_fd, rel, job.uid)
    except UnsafePath as e:
        raise RequestError(f"job {job.id}'s output is not read: {e}") from None
    finally:
        os.close(dir_fd)
    if fd is None:
        return b""
    try:
        return os.pread(fd, limit, offset)
    finally:
        os.close(fd)
