"""Findings 2, 3 and 12: output paths and working directories a user controls.

`--output` must be a name inside the workdir; `ds01q logs` reads only the job owner's regular
file, never through a symlink and never blocking on a FIFO; a workdir swapped for a symlink after
submit is refused at launch; an output file another user planted is refused at launch."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.security.conftest import assert_served
from tests.support import Daemon, ensure_user

SECRET = "TOP-SECRET-of-stu2"


def victim_file(daemon: Daemon) -> Path:
    """stu2's secret: inside a 0700 home, in a 0755 subdirectory, the file itself 0644."""
    pw = ensure_user("ds01q-stu2")
    home = daemon.workdir("ds01q-stu2")
    os.chmod(home, 0o700)
    sub = home / "pub"
    sub.mkdir(exist_ok=True)
    os.chown(sub, pw.pw_uid, pw.pw_gid)
    f = sub / "secret.txt"
    f.write_text(SECRET + "\n")
    os.chown(f, pw.pw_uid, pw.pw_gid)
    return f


def one_line_error(r: object, *words: str) -> None:
    assert r.rc != 0, r  # type: ignore[attr-defined]
    err = r.err.strip()  # type: ignore[attr-defined]
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("opt,value,word", [
    ("--output", "/etc/shadow", "absolute"),
    ("--output", "../../../etc/shadow", ".."),
    ("--output", "logs/../../x.out", ".."),
    ("--output", "a\x1b[2Jb", "printable"),
])
def test_output_outside_the_workdir_is_refused_at_submit(sec_daemon: Daemon, opt: str, value: str,
                                                         word: str) -> None:
    path = sec_daemon.script("ds01q-stu1", "j.sh", "echo hi\n")
    r = sec_daemon.cli("ds01q-stu1", "submit", "--hold", opt, value, str(path))
    one_line_error(r, word)


def test_sbatch_output_directive_to_etc_shadow_is_refused(sec_daemon: Daemon) -> None:
    path = sec_daemon.script("ds01q-stu1", "j.sh", "#!/bin/sh\n#SBATCH --output=/etc/shadow\necho hi\n")
    one_line_error(sec_daemon.cli("ds01q-stu1", "submit", "--hold", str(path)), "absolute")
    path = sec_daemon.script("ds01q-stu1", "e.sh", "#!/bin/sh\n#SBATCH --error=/etc/shadow\necho hi\n")
    one_line_error(sec_daemon.cli("ds01q-stu1", "submit", "--hold", str(path)), "absolute")


def test_logs_never_follows_a_planted_symlink(sec_daemon: Daemon) -> None:
    user, pw = "ds01q-stu1", ensure_user("ds01q-stu1")
    secret = victim_file(sec_daemon)
    wd = sec_daemon.workdir(user)
    for i, target in enumerate(["/etc/shadow", str(secret)]):
        job = sec_daemon.submit(user, "echo hi\n", "--hold", name=f"s{i}.sh")
        link = wd / f"ds01q-{job}.out"
        os.symlink(target, link)
        os.lchown(link, pw.pw_uid, pw.pw_gid)
        r = sec_daemon.cli(user, "logs", str(job))
        one_line_error(r, "symbolic link")
        assert "root:" not in r.out and SECRET not in r.out, r
    assert_served(sec_daemon)


def test_logs_refuses_a_file_of_another_user_and_a_symlinked_directory(sec_daemon: Daemon) -> None:
    user, pw = "ds01q-stu1", ensure_user("ds01q-stu1")
    secret = victim_file(sec_daemon)
    wd = sec_daemon.workdir(user)
    job = sec_daemon.submit(user, "echo hi\n", "--hold", "--output", "out/%j.log", name="d.sh")
    os.symlink(secret.parent, wd / "out")  # the directory of the output is a symlink into stu2's home
    os.lchown(wd / "out", pw.pw_uid, pw.pw_gid)
    os.link(secret, secret.parent / f"{job}.log")  # and the file there is stu2's
    r = sec_daemon.cli(user, "logs", str(job))
    one_line_error(r, "symbolic link")
    assert SECRET not in r.out
    job2 = sec_daemon.submit(user, "echo hi\n", "--hold", name="o.sh")
    other = wd / f"ds01q-{job2}.out"
    other.write_text(SECRET)  # root-owned, not the job owner's
    one_line_error(sec_daemon.cli(user, "logs", str(job2)), "owned by uid 0")


def test_logs_on_a_fifo_returns_at_once(sec_daemon: Daemon) -> None:
    user, pw = "ds01q-stu1", ensure_user("ds01q-stu1")
    wd = sec_daemon.workdir(user)
    job = sec_daemon.submit(user, "echo hi\n", "--hold", name="f.sh")
    fifo = wd / f"ds01q-{job}.out"
    os.mkfifo(fifo)
    os.chown(fifo, pw.pw_uid, pw.pw_gid)
    for _ in range(5):
        t0 = time.monotonic()
        r = sec_daemon.cli(user, "logs", str(job))
        assert time.monotonic() - t0 < 2.0
        one_line_error(r, "not a regular file")
    assert_served(sec_daemon)


def test_output_precreated_by_another_user_in_a_shared_dir_is_refused(refusing_daemon: Daemon) -> None:
    """Finding 12: stu2 pre-creates stu1's predictable output name in a world-writable sticky dir."""
    sec_daemon = refusing_daemon
    shared = sec_daemon.root / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    stu1, stu2 = ensure_user("ds01q-stu1"), ensure_user("ds01q-stu2")
    path = sec_daemon.script("ds01q-stu1", "p.sh", "echo private-output\n")
    r = sec_daemon.cli("ds01q-stu1", "submit", "--parsable", "--hold", "--output", "trap.out", str(path),
                       cwd=shared)
    assert r.rc == 0, r
    job = int(r.out)
    trap = shared / "trap.out"
    trap.write_text("")
    os.chown(trap, stu2.pw_uid, stu2.pw_gid)
    os.chmod(trap, 0o666)
    assert sec_daemon.cli("ds01q-adm1", "admin", "release", str(job)).rc == 0
    done = sec_daemon.wait_state(job, {"FAILED", "COMPLETED"}, timeout=90)
    assert done["state"] == "FAILED", done
    assert "private-output" not in trap.read_text()
    assert "output file refused" in done["reason"], done["reason"]
    assert stu1.pw_uid != stu2.pw_uid


@pytest.mark.parametrize("target", ["victim", "/etc"])
def test_workdir_swapped_for_a_symlink_after_submit_is_refused_at_launch(refusing_daemon: Daemon,
                                                                        target: str) -> None:
    sec_daemon = refusing_daemon
    user, pw = "ds01q-stu1", ensure_user("ds01q-stu1")
    secret = victim_file(sec_daemon)
    sub = sec_daemon.workdir(user) / "proj"
    sub.mkdir()
    os.chown(sub, pw.pw_uid, pw.pw_gid)
    path = sec_daemon.script(user, "w.sh", "#!/bin/sh\ncat secret.txt; ls /etc/shadow && echo MOUNTED-ETC\n")
    r = sec_daemon.cli(user, "submit", "--parsable", "--hold", "--output", "none", str(path), cwd=sub)
    assert r.rc == 0, r
    job = int(r.out)
    sub.rename(sub.parent / "proj.orig")
    os.symlink(str(secret.parent) if target == "victim" else target, sub)
    os.lchown(sub, pw.pw_uid, pw.pw_gid)
    assert sec_daemon.cli("ds01q-adm1", "admin", "release", str(job)).rc == 0
    done = sec_daemon.wait_state(job, {"FAILED", "COMPLETED"}, timeout=90)
    assert done["state"] == "FAILED" and done.get("exit_code") is None, done
    assert "working directory refused" in done["reason"], done["reason"]
    assert sec_daemon.containers(job) == []


def test_output_linked_to_a_root_group_file_gets_neither_roots_uid_nor_its_groups(make_sec_daemon) -> None:  # type: ignore[no-untyped-def]
    """The output file is opened with the user's uid and primary group only: a symlink to a file that root's
    supplementary group (0, which this daemon has) may write is refused, and the file is left as it was."""
    old = os.getgroups()
    os.setgroups(sorted({0, *old}))
    try:
        d = make_sec_daemon(executor={"launch_backoff": "0.5s"})
    finally:
        os.setgroups(old)
    assert d.proc is not None
    groups = Path(f"/proc/{d.proc.pid}/status").read_text().split("Groups:")[1].split("\n")[0].split()
    assert "0" in groups, groups
    user, pw = "ds01q-stu1", ensure_user("ds01q-stu1")
    canary = d.root / "root-group.txt"
    canary.write_text("ROOT-GROUP-DATA\n")
    os.chown(canary, 0, 0)
    os.chmod(canary, 0o660)
    wd = d.workdir(user)
    os.symlink(canary, wd / "out.txt")
    os.lchown(wd / "out.txt", pw.pw_uid, pw.pw_gid)
    path = d.script(user, "o.sh", "echo OVERWRITTEN\n")
    r = d.cli(user, "submit", "--parsable", "--output", "out.txt", str(path), cwd=wd)
    assert r.rc == 0, r
    done = d.wait_state(int(r.out), {"FAILED", "COMPLETED"}, timeout=90)
    assert done["state"] == "FAILED", done
    assert "cannot create output file" in done["reason"] and "Permission denied" in done["reason"], done["reason"]
    st = canary.stat()
    assert canary.read_text() == "ROOT-GROUP-DATA\n" and (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o660)
    assert_served(d)
