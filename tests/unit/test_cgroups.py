"""Cgroup naming (ds01-infra compatible) and cgroup file parsing, against fake cgroup trees."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ds01q.errors import ExecutorError
from ds01q.executors import cgroups
from ds01q.executors.base import Usage
from ds01q.executors.cgroups import CgroupMount

# ------------------------------------------------------------------ naming

@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("alice", "alice"),
        ("john.doe", "john_doe"),
        ("h.baker@lab.example", "h_baker"),
        ("204214@domain.lan", "204214"),
        ("first-last", "first_last"),  # a dash would nest in systemd
        ("a..b--c", "a_b_c"),
        ("._x_.", "x"),
        ("svc:web", "svc:web"),
    ],
    ids=["plain", "dot", "ad-domain", "numeric-ad", "dash", "runs-collapse", "trim", "colon-kept"],
)
def test_sanitize_name(name: str, want: str) -> None:
    assert cgroups.sanitize_name(name) == want


def test_long_name_is_cut_with_md5_of_the_original() -> None:
    name = "a.very.long.firstname.and.lastname.person@lab.example"
    got = cgroups.sanitize_name(name)
    assert len(got) == 32
    assert got == "a_very_long_firstname_and_l" + "_" + hashlib.md5(name.encode()).hexdigest()[:4]
    other = "a.very.long.firstname.and.lastname.human@lab.example"
    assert cgroups.sanitize_name(other) != got  # same 27-char prefix, different suffix


def test_name_with_nothing_left_still_gets_a_stable_component() -> None:
    got = cgroups.sanitize_name("@lab.example")
    assert got.startswith("u") and len(got) == 9 and got == cgroups.sanitize_name("@lab.example")


def test_slice_name_and_path() -> None:
    leaf = cgroups.slice_name("ds01q", "student", "h.baker@lab.example")
    assert leaf == "ds01q-student-h_baker.slice"
    assert cgroups.slice_path(leaf) == "/ds01q.slice/ds01q-student.slice/ds01q-student-h_baker.slice"
    assert cgroups.cgroupfs_parent("ds01", "researcher", "first-last") == (
        "/ds01.slice/ds01-researcher.slice/ds01-researcher-first_last.slice")


def test_schemes_differ_only_in_group_sanitising() -> None:
    assert cgroups.slice_name("ds01q", "ml.team", "bob") == "ds01q-ml_team-bob.slice"
    assert cgroups.slice_name("ds01", "student", "h.baker@x.y", scheme="ds01-infra") == "ds01-student-h_baker.slice"
    assert cgroups.slice_name("ds01", "ml.team", "bob", scheme="ds01-infra") == "ds01-ml.team-bob.slice"
    with pytest.raises(ExecutorError, match="unknown slice naming scheme"):
        cgroups.slice_name("ds01q", "g", "u", scheme="other")


def test_cgroup_parent_per_driver() -> None:
    assert cgroups.cgroup_parent("systemd", "ds01q", "student", "alice") == "ds01q-student-alice.slice"
    assert cgroups.cgroup_parent("cgroupfs", "ds01q", "student", "alice") == (
        "/ds01q.slice/ds01q-student.slice/ds01q-student-alice.slice")
    with pytest.raises(ExecutorError, match="unknown cgroup driver 'lxc'"):
        cgroups.cgroup_parent("lxc", "ds01q", "student", "alice")


@pytest.mark.parametrize("root", ["", "ds01q/x", "bad root", "-lead"])
def test_invalid_root_is_rejected(root: str) -> None:
    with pytest.raises(ExecutorError, match="invalid cgroup root"):
        cgroups.slice_name(root, "g", "u")


def test_slice_path_rejects_non_slices() -> None:
    for bad in ("ds01q", "/ds01q.slice/x.slice", "a--b.slice"):
        with pytest.raises(ExecutorError):
            cgroups.slice_path(bad)


def test_normalize_parent_converts_between_drivers() -> None:
    path = "/ds01q.slice/ds01q-g.slice/ds01q-g-u.slice"
    assert cgroups.normalize_parent("systemd", path) == "ds01q-g-u.slice"
    assert cgroups.normalize_parent("systemd", "ds01q-g-u.slice") == "ds01q-g-u.slice"
    assert cgroups.normalize_parent("cgroupfs", "ds01q-g-u.slice") == path
    assert cgroups.normalize_parent("cgroupfs", "custom/parent") == "/custom/parent"
    with pytest.raises(ExecutorError, match="must be a .slice"):
        cgroups.normalize_parent("systemd", "/docker")


def test_all_names_are_single_line_and_fit_systemd() -> None:
    for user in ("x" * 80, "ä.ö@ü", "a b\tc", "\n"):
        leaf = cgroups.slice_name("ds01q", "student", user)
        comp = leaf[len("ds01q-student-"):-len(".slice")]
        assert comp and len(comp) <= 32 and all(c.isalnum() or c in "_:" for c in comp)
        assert "-" not in comp


# ------------------------------------------------------------------ mounts and files

def _mountinfo(tmp: Path, lines: list[str]) -> str:
    p = tmp / "mountinfo"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_mountinfo_v1_hybrid_with_escapes(tmp_path: Path) -> None:
    unified = tmp_path / "uni fied"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    mi = _mountinfo(tmp_path, [
        "22 1 0:20 / / rw,relatime - ext4 /dev/vda rw",
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
        "35 31 0:32 /nested /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd",
        f"41 31 0:38 / {str(unified).replace(' ', chr(92) + '040')} rw shared:9 - cgroup2 cgroup2 rw",
    ])
    mounts = cgroups.cgroup_mounts(mi)
    assert [m.version for m in mounts] == [1, 1, 1, 2]
    assert mounts[0].controllers == frozenset({"cpu", "cpuacct"})
    assert mounts[1].root == "/nested"
    assert "name=systemd" in mounts[2].controllers
    assert mounts[3].mountpoint == str(unified) and mounts[3].controllers == frozenset({"hugetlb"})


def test_missing_mountinfo_means_no_mounts(tmp_path: Path) -> None:
    assert cgroups.cgroup_mounts(str(tmp_path / "nope")) == []


def _v1(tmp: Path) -> list[CgroupMount]:
    cpu, mem = tmp / "cpuacct", tmp / "memory"
    job_cpu, job_mem = cpu / "ds01q.slice" / "job-1", mem / "ds01q.slice" / "job-1"
    job_cpu.mkdir(parents=True)
    job_mem.mkdir(parents=True)
    (job_cpu / "cpuacct.usage").write_text("2500000000\n")
    (job_mem / "memory.usage_in_bytes").write_text("10485760\n")
    (job_mem / "memory.max_usage_in_bytes").write_text("33554432\n")
    (job_mem / "memory.stat").write_text("cache 100\ntotal_inactive_file 1048576\n")
    (job_mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (job_mem / "cgroup.procs").write_text("")
    return [CgroupMount(str(cpu), "/", 1, frozenset({"cpuacct"})),
            CgroupMount(str(mem), "/", 1, frozenset({"memory"}))]


def _v2(tmp: Path) -> list[CgroupMount]:
    job = tmp / "ds01q.slice" / "job-1"
    job.mkdir(parents=True)
    (job / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    (job / "memory.current").write_text("4096000\n")
    (job / "memory.peak").write_text("8192000\n")
    (job / "memory.stat").write_text("anon 100\ninactive_file 96000\n")
    (job / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    return [CgroupMount(str(tmp), "/", 2, frozenset({"memory", "cpu", "pids"}))]


def test_read_usage_v1(tmp_path: Path) -> None:
    mounts = _v1(tmp_path)
    got = cgroups.read_cgroup_usage_path("/ds01q.slice/job-1", mounts)
    assert got == Usage(cpu_s=2.5, mem_bytes=10485760 - 1048576, max_rss_bytes=33554432)
    assert cgroups.read_oom_kills("/ds01q.slice/job-1", mounts) == 2


def test_read_usage_v2_and_fs_path_form(tmp_path: Path) -> None:
    mounts = _v2(tmp_path)
    want = Usage(cpu_s=1.5, mem_bytes=4096000 - 96000, max_rss_bytes=8192000)
    assert cgroups.read_cgroup_usage_path("/ds01q.slice/job-1", mounts) == want
    # a directory under the mount means the same cgroup
    assert cgroups.read_cgroup_usage_path(str(tmp_path / "ds01q.slice" / "job-1"), mounts) == want
    assert cgroups.read_oom_kills("ds01q.slice/job-1", mounts) == 1


def test_v2_without_memory_peak(tmp_path: Path) -> None:
    mounts = _v2(tmp_path)
    os.unlink(tmp_path / "ds01q.slice" / "job-1" / "memory.peak")
    got = cgroups.read_cgroup_usage_path("/ds01q.slice/job-1", mounts)
    assert got is not None and got.max_rss_bytes is None and got.cpu_s == 1.5


def test_gone_cgroup_reads_none(tmp_path: Path) -> None:
    assert cgroups.read_cgroup_usage_path("/ds01q.slice/job-9", _v1(tmp_path)) is None
    assert cgroups.read_oom_kills("/ds01q.slice/job-9", _v1(tmp_path / "b")) is None


def test_v1_controllers_win_over_the_v2_mount_on_hybrid_hosts(tmp_path: Path) -> None:
    v1 = _v1(tmp_path / "v1")
    uni = tmp_path / "unified"
    (uni / "ds01q.slice" / "job-1").mkdir(parents=True)
    (uni / "ds01q.slice" / "job-1" / "cpu.stat").write_text("usage_usec 9000000\n")
    mounts = v1 + [CgroupMount(str(uni), "/", 2, frozenset({"hugetlb"}))]
    got = cgroups.read_cgroup_usage_path("/ds01q.slice/job-1", mounts)
    assert got is not None and got.cpu_s == 2.5


def test_mount_root_is_honoured(tmp_path: Path) -> None:
    mem = tmp_path / "memory"
    (mem / "job-1").mkdir(parents=True)
    (mem / "job-1" / "memory.usage_in_bytes").write_text("100\n")
    mounts = [CgroupMount(str(mem), "/ds01q.slice", 1, frozenset({"memory"}))]
    got = cgroups.read_cgroup_usage_path("/ds01q.slice/job-1", mounts)
    assert got is not None and got.mem_bytes == 100
    assert cgroups.read_cgroup_usage_path("/elsewhere/job-1", mounts) is None


def test_cgroup_pids_walks_descendants(tmp_path: Path) -> None:
    mounts = _v1(tmp_path)
    leaf = tmp_path / "memory" / "ds01q.slice" / "job-1" / "container"
    leaf.mkdir()
    (leaf / "cgroup.procs").write_text("123\n456\n")
    assert sorted(cgroups.cgroup_pids("/ds01q.slice/job-1", mounts)) == [123, 456]
    assert cgroups.cgroup_pids("/ds01q.slice/none", mounts) == []


def test_pid_cgroups_of_this_process() -> None:
    got = cgroups.pid_cgroups(os.getpid())
    if not got:
        pytest.skip("no /proc/<pid>/cgroup here")
    assert all(p.startswith("/") for p in got.values())
    assert cgroups.pid_cgroups(2**22 + 7) == {}


def test_read_usage_of_this_process_is_positive() -> None:
    if not cgroups.cgroup_mounts():
        pytest.skip("no cgroup filesystem mounted")
    sum(i * i for i in range(200_000))  # some CPU time of our own
    got = cgroups.read_cgroup_usage(os.getpid())
    assert got is not None and got.cpu_s > 0


def test_remove_root_cgroup_is_refused() -> None:
    with pytest.raises(ExecutorError, match="root cgroup"):
        cgroups.remove_cgroup("/")


def test_own_cgroup_mounts_are_read_again_only_after_a_while(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reads: list[str] = []
    real = cgroups._read_cgroup_mounts

    def counted(path: str) -> list[cgroups.CgroupMount]:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(cgroups, "_read_cgroup_mounts", counted)
    monkeypatch.setattr(cgroups, "_own_mounts", None)
    first = cgroups.cgroup_mounts()
    assert cgroups.cgroup_mounts() == first
    assert reads == ["/proc/self/mountinfo"]  # the second call used what the first read
    stamp, mounts = cgroups._own_mounts  # type: ignore[misc]
    monkeypatch.setattr(cgroups, "_own_mounts", (stamp - cgroups.MOUNTS_FRESH_S - 1, mounts))
    cgroups.cgroup_mounts()
    assert reads == ["/proc/self/mountinfo"] * 2
    cgroups.cgroup_mounts("/proc/self/mountinfo-other")  # another file is always read
    assert reads[-1] == "/proc/self/mountinfo-other"
