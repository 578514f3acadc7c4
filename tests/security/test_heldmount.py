"""Finding 3, the race itself: what is mounted is the directory that was checked, even when its
path is swapped for a symlink between the check and the mount (no Docker needed, root only)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ds01q.errors import ExecutorError
from ds01q.executors.heldmount import HeldDir
from tests.support import ensure_user


@pytest.fixture
def user_dir(tmp_path: Path) -> tuple[Path, int]:
    pw = ensure_user("ds01q-stu1")
    os.chmod(tmp_path, 0o755)
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "mine.txt").write_text("checked")
    os.chown(wd, pw.pw_uid, pw.pw_gid)
    return wd, pw.pw_uid


def test_held_directory_survives_a_swap_after_the_check(user_dir: tuple[Path, int], tmp_path: Path) -> None:
    wd, uid = user_dir
    other = tmp_path / "other"
    other.mkdir()
    (other / "secret.txt").write_text("not yours")
    held = HeldDir(str(wd), uid, job_id=424242, root=str(tmp_path / "held"))
    try:
        wd.rename(tmp_path / "moved")
        os.symlink(other, wd)  # the swap, after the check and before Docker mounts the source
        src = Path(held.source)
        assert src != wd and f" {src} " in Path("/proc/self/mountinfo").read_text()
        assert sorted(p.name for p in src.iterdir()) == ["mine.txt"]
    finally:
        held.release()
    assert not Path(held.source).exists()


def test_symlinked_or_foreign_workdir_is_refused(user_dir: tuple[Path, int], tmp_path: Path) -> None:
    wd, uid = user_dir
    link = tmp_path / "link"
    os.symlink(wd, link)
    with pytest.raises(ExecutorError, match="symbolic link"):
        HeldDir(str(link / "."), uid, job_id=1, root=str(tmp_path / "held"))
    with pytest.raises(ExecutorError, match="symbolic link"):
        HeldDir(str(link), uid, job_id=1, root=str(tmp_path / "held"))
    root_dir = tmp_path / "rootdir"
    root_dir.mkdir()
    with pytest.raises(ExecutorError, match="belongs to uid 0"):
        HeldDir(str(root_dir), uid, job_id=1, root=str(tmp_path / "held"))


def test_staging_points_left_by_a_crash_are_dropped_and_two_holds_never_share_one(
        user_dir: tuple[Path, int], tmp_path: Path) -> None:
    wd, uid = user_dir
    root = str(tmp_path / "held")
    first, second = HeldDir(str(wd), uid, job_id=1, root=root), HeldDir(str(wd), uid, job_id=1, root=root)
    assert first.source != second.source  # job ids repeat across daemons: each launch its own point
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f" {first.source} " in mounts and f" {second.source} " in mounts
    HeldDir.drop_stale(root)  # a new daemon of this instance, after a crash that released nothing
    assert os.listdir(root) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f" {first.source} " not in mounts and f" {second.source} " not in mounts
    assert (wd / "mine.txt").read_text() == "checked"  # the workdir itself is untouched
