"""``as_fs_user``: the user's file-system rights in one thread only, and root's back afterwards."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ds01q.executors.fsuser import as_fs_user
from tests.support import ensure_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or as_fs_user is None, reason="needs root on x86_64 or aarch64")


def fs_ids(tid: int) -> tuple[str, str, str]:
    """(fsuid, fsgid, groups) of one thread, from /proc."""
    status = Path(f"/proc/self/task/{tid}/status").read_text()
    field = {line.split(":")[0]: line.split(":", 1)[1].split() for line in status.splitlines()}
    return field["Uid"][3], field["Gid"][3], " ".join(field["Groups"])


def test_only_the_calling_thread_has_the_users_rights_and_gets_roots_back(tmp_path: Path) -> None:
    pw = ensure_user("ds01q-stu1")
    root_only = tmp_path / "root-only"
    root_only.mkdir(mode=0o700)
    old = os.getgroups()
    os.setgroups(sorted({0, *old}))
    inside, done, seen = threading.Event(), threading.Event(), {}

    def as_user() -> None:
        with as_fs_user(pw.pw_uid, pw.pw_gid):
            seen["ids"] = fs_ids(threading.get_native_id())
            with pytest.raises(PermissionError):
                open(root_only / "x", "w")
            inside.set()
            done.wait(10)
        seen["after"] = fs_ids(threading.get_native_id())

    try:
        t = threading.Thread(target=as_user)
        t.start()
        assert inside.wait(10)
        (root_only / "mine").write_text("root wrote this\n")  # this thread: root's rights all along
        main_ids = fs_ids(threading.get_native_id())
        done.set()
        t.join(10)
        assert seen["ids"] == (str(pw.pw_uid), str(pw.pw_gid), "")  # no supplementary group, root's 0 neither
        assert main_ids[:2] == ("0", "0") and "0" in main_ids[2].split()
        assert seen["after"] == main_ids  # the user's thread got root's ids and groups back
    finally:
        done.set()
        os.setgroups(old)


def test_it_does_not_nest_and_an_error_inside_restores_root() -> None:
    pw = ensure_user("ds01q-stu1")
    with pytest.raises(OSError):
        with as_fs_user(pw.pw_uid, pw.pw_gid):
            with as_fs_user(pw.pw_uid, pw.pw_gid):
                pass
    assert fs_ids(threading.get_native_id())[:2] == ("0", "0")
    with pytest.raises(ZeroDivisionError):
        with as_fs_user(pw.pw_uid, pw.pw_gid):
            1 / 0
    assert fs_ids(threading.get_native_id())[:2] == ("0", "0")
