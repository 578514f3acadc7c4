"""Who is calling: the kernel's uid (SO_PEERCRED) mapped through the user database.

A uid with no passwd entry, or one inside another user's subordinate range (``/etc/subuid``, what
``newuidmap`` hands out), would be a fresh queue user with fresh quota and fair-share; both are
refused unless the config allows them (``security.allow_unmapped_uids`` /
``allow_subordinate_uids``). The group is the account's primary group, not the peer's.
"""
from __future__ import annotations

import os
import pwd
import socket
import struct
import threading

from ds01q.config import Config
from ds01q.errors import PermissionDenied
from ds01q.services import Caller

_lock = threading.Lock()
_cache: dict[str, tuple[float, list[tuple[str, int, int]]]] = {}


def subordinate_ranges(path: str) -> list[tuple[str, int, int]]:
    """``(owner, first, count)`` from a subuid file (re-read when it changes); [] if there is none."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return []
    with _lock:
        hit = _cache.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
    ranges: list[tuple[str, int, int]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    ranges.append((parts[0], int(parts[1]), int(parts[2])))
    except OSError:
        return []
    with _lock:
        _cache[path] = (mtime, ranges)
    return ranges


def subordinate_owner(uid: int, path: str) -> str | None:
    for owner, first, count in subordinate_ranges(path):
        if first <= uid < first + count:
            return owner
    return None


def caller_for(cfg: Config, uid: int, gid: int) -> Caller:
    """The Caller for a kernel uid, or PermissionDenied with a one-line reason."""
    sec = cfg.security
    try:
        pw = pwd.getpwuid(uid)
        user, gid = pw.pw_name, pw.pw_gid
    except KeyError:
        if uid != 0 and not sec.allow_unmapped_uids:
            raise PermissionDenied(f"uid {uid} has no account in the user database; ds01q serves only accounts "
                                   "(an admin may set security.allow_unmapped_uids)") from None
        user = f"uid{uid}"
    if uid != 0 and not sec.allow_subordinate_uids:
        owner = subordinate_owner(uid, sec.subuid_file)
        if owner is not None and owner not in (user, str(uid)):
            raise PermissionDenied(f"uid {uid} is a subordinate uid of {owner} ({sec.subuid_file}); submit as "
                                   f"{owner} (an admin may set security.allow_subordinate_uids)")
    return Caller(uid=uid, gid=gid, user=user, admin=cfg.is_admin(user, uid))


def peer_ids(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket, from the kernel."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid
