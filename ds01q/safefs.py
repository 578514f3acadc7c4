"""Opening paths a user controls, as root, without being tricked.

Every component is opened relative to its parent's descriptor with ``O_NOFOLLOW``, so a symlink
anywhere in the path (planted before or swapped in after a check) is refused instead of followed,
and what was checked is the descriptor that is then used. Final files are opened ``O_NONBLOCK``
(a FIFO never blocks a thread) and must be regular files owned by the expected user.
"""
from __future__ import annotations

import errno
import os
import stat

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnsafePath(Exception):
    """A path that is not what it must be (a symlink, not a directory, someone else's...); one line."""


def _why(e: OSError, path: str) -> UnsafePath:
    if e.errno == errno.ELOOP or e.errno == errno.ENOTDIR:
        return UnsafePath(f"{path} is or passes through a symbolic link or a non-directory")
    return UnsafePath(f"{path}: {e.strerror}")


def open_dir(path: str, owner: int | None = None) -> int:
    """A descriptor of the absolute directory ``path`` reached without following any symlink.

    With ``owner``, the directory itself must belong to that uid, or be a root-owned sticky
    directory (like /tmp). The caller closes the descriptor.
    """
    if not os.path.isabs(path):
        raise UnsafePath(f"{path} is not an absolute path")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise UnsafePath(f"{path} contains '.' or '..'")
    fd = os.open("/", _DIR)
    try:
        for p in parts:
            try:
                nxt = os.open(p, _DIR, dir_fd=fd)
            except OSError as e:
                raise _why(e, path) from None
            os.close(fd)
            fd = nxt
        if owner is not None:
            st = os.fstat(fd)
            if st.st_uid != owner and not (st.st_uid == 0 and st.st_mode & stat.S_ISVTX):
                raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not {owner}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_user_file(dir_fd: int, relpath: str, owner: int) -> int | None:
    """Open ``relpath`` below ``dir_fd`` for reading: no symlink, no FIFO/device, owned by ``owner``.

    Intermediate directories must belong to ``owner`` too. None when the file does not exist yet.
    """
    parts = relpath.split("/")
    if not relpath or relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"{relpath!r} is not a plain relative name")
    fd = os.dup(dir_fd)
    try:
        for p in parts[:-1]:
            try:
                nxt = os.open(p, _DIR, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as e:
                raise _why(e, relpath) from None
            os.close(fd)
            fd = nxt
            if os.fstat(fd).st_uid != owner:
                raise UnsafePath(f"directory of {relpath} does not belong to uid {owner}")
        try:
            f = os.open(parts[-1], _FILE, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _why(e, relpath) from None
    finally:
        os.close(fd)
    st = os.fstat(f)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != owner:
        os.close(f)
        kind = "a regular file" if stat.S_ISREG(st.st_mode) else "not a regular file"
        raise UnsafePath(f"{relpath} is {kind} owned by uid {st.st_uid}; only the job owner's regular files are read")
    return f
