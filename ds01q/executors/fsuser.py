"""Open a file with a user's file-system rights, in the calling thread only, without a child process.

Linux keeps credentials per thread. ``setfsuid``/``setfsgid`` (glibc calls them as they are, for this
thread) and the raw ``setgroups`` system call (glibc's wrapper would change every thread of the
process) give this thread the user's uid, primary group and no supplementary group for every
permission check the kernel makes on a path. The kernel drops root's file capabilities
(CAP_DAC_OVERRIDE, CAP_FOWNER, ...) while the file-system uid is not 0, and gives them back when it
is 0 again. Other threads keep root's rights throughout. NFS servers and Samba use the same
mechanism.

Where the raw call's number is not known here, ``as_fs_user`` is None and callers run a child
process as the user instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SETGROUPS = {"x86_64": 116, "aarch64": 159}.get(platform.machine())
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_ids = threading.local()


class CredentialsStuck(RuntimeError):
    """This thread could not get root's rights back: it must not go on."""


def _setgroups(groups: list[int]) -> None:
    arr = (ctypes.c_uint * max(1, len(groups)))(*groups)
    if _libc.syscall(_SETGROUPS, len(groups), arr if groups else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _fs_ids() -> tuple[int, int]:
    """This thread's file-system uid and gid (``setfs*id(-1)`` changes nothing and returns the current one)."""
    return _libc.setfsuid(-1), _libc.setfsgid(-1)


@contextmanager
def _fs_user(uid: int, gid: int) -> Iterator[None]:
    if os.geteuid() != 0 or getattr(_ids, "inside", False):
        raise PermissionError("as_fs_user needs root and does not nest")
    groups = os.getgroups()
    _setgroups([])
    _ids.inside = True
    try:
        _libc.setfsgid(gid)
        _libc.setfsuid(uid)
        if _fs_ids() != (uid, gid):
            raise PermissionError(f"cannot take the file-system ids {uid}:{gid}")
        yield
    finally:
        _libc.setfsuid(0)
        _libc.setfsgid(0)
        try:
            _setgroups(groups)
        except OSError as e:
            raise CredentialsStuck(f"cannot restore this thread's groups: {e.strerror}") from None
        if _fs_ids() != (0, 0):
            raise CredentialsStuck("cannot restore this thread's file-system ids")
        _ids.inside = False


as_fs_user = _fs_user if _SETGROUPS is not None else None
