"""ProcessExecutor: the executor contract with real processes, cgroups (when root) and a real user."""
from __future__ import annotations

import json
import dataclasses
import os
import pwd
import random
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ds01q.errors import ExecutorError
from ds01q.executors import cgroups
from ds01q.executors.base import ExitInfo, Handle, LaunchSpec
from ds01q.executors.process import ProcessExecutor
from tests.support import unless_root

TEST_USER = "ds01qtest1"
CGROUP_ROOT = f"/ds01q-proc-test-{os.getpid()}"


@pytest.fixture(scope="module")
def user() -> pwd.struct_passwd:
    """A real unprivileged user when we are root; ourselves otherwise."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        res = subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", TEST_USER], capture_output=True, text=True)
        if res.returncode not in (0, 9):
            pytest.fail(f"useradd failed: {res.stderr.strip()}")
        return pwd.getpwnam(TEST_USER)


def _cgroups_usable() -> bool:
    probe = f"{CGROUP_ROOT}/probe"
    try:
        cgroups.create_cgroup(probe)
        return not cgroups.set_cgroup_limits(probe, None, 64 * 2**20, None)
    except ExecutorError:
        return False
    finally:
        try:
            cgroups.remove_cgroup(probe, wait_s=0)
        except ExecutorError:
            pass


@pytest.fixture(scope="module")
def has_cgroups() -> Iterator[bool]:
    ok = os.geteuid() == 0 and _cgroups_usable()
    yield ok
    for sub in ("supervisors", ""):
        path = f"{CGROUP_ROOT}/{sub}".rstrip("/")
        try:
            cgroups.remove_cgroup(path, wait_s=1)
        except ExecutorError:
            pass


@pytest.fixture
def workdir(user: pwd.struct_passwd) -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ds01q-px-", dir="/tmp")
    os.chmod(d, 0o755)
    if os.geteuid() == 0:
        os.chown(d, user.pw_uid, user.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def state_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ds01q-pstate-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def executor(state_dir: str, has_cgroups: bool) -> Iterator[ProcessExecutor]:
    ex = ProcessExecutor(state_dir, cgroup_root=CGROUP_ROOT)
    yield ex
    ex.close()
    for h in list(ex.running().values()):
        ex.stop(h, 0)
        ex.remove(h)


_next = [random.randrange(10**6, 9 * 10**6)]


@pytest.fixture
def make_spec(user: pwd.struct_passwd, workdir: str) -> Callable[..., LaunchSpec]:
    def make(command: list[str], **over: Any) -> LaunchSpec:
        _next[0] += 1
        jid = over.pop("job_id", _next[0])
        kw: dict[str, Any] = dict(
            job_id=jid, name=f"t{jid}", user=user.pw_name, uid=user.pw_uid, gid=user.pw_gid, group="student",
            image="-", command=command, workdir=workdir, env={"HOME": workdir}, slices=[],
            output_path=os.path.join(workdir, f"ds01q-{jid}.out"),
        )
        kw.update(over)
        return LaunchSpec(**kw)

    return make


def read(path: str | None) -> str:
    with open(path or os.devnull) as f:
        return f.read()


def wait_exit(executor: ProcessExecutor, h: Handle, timeout_s: float = 30) -> ExitInfo:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = executor.poll(h)
        if info is not None:
            return info
        time.sleep(0.05)
    raise AssertionError(f"job {h.job_id} still running after {timeout_s} s")


def run_to_end(executor: ProcessExecutor, spec: LaunchSpec) -> tuple[ExitInfo, str]:
    h = executor.launch(spec)
    try:
        info = wait_exit(executor, h)
    finally:
        executor.remove(h)
    return info, read(spec.output_path)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ------------------------------------------------------------------ batch jobs

def test_output_env_and_user(executor: ProcessExecutor, make_spec: Callable[..., LaunchSpec],
                             user: pwd.struct_passwd) -> None:
    slices = ["MIG-11111111-2222-3333-4444-555555555555"]
    spec = make_spec(["sh", "-c", 'echo "cvd=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES"; '
                                  'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"; pwd; echo err >&2; '
                                  'test -n "$PATH" && echo path-set'], slices=slices)
    info, out = run_to_end(executor, spec)
    assert info.exit_code == 0 and not info.oom_killed and info.error == ""
    assert out.splitlines() == [f"cvd={slices[0]} nv={slices[0]}",
                                f"uid={user.pw_uid} gid={user.pw_gid} groups={user.pw_gid}",
                                spec.workdir, "err", "path-set"]
    st = os.stat(spec.output_path)  # type: ignore[arg-type]
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, user.pw_gid, 0o644)
    assert info.finished_at is not None and abs(info.finished_at - time.time()) < 300
    assert os.listdir(executor.state_dir) == []  # remove() cleaned up


def test_error_file_and_open_mode(executor: ProcessExecutor, make_spec: Callable[..., LaunchSpec],
                                  user: pwd.struct_passwd) -> None:
    """--error: stderr to its own file, created as the user; truncate empties old content, append keeps it."""
    spec = make_spec(["sh", "-c", "echo out; echo err >&2"])
    err = spec.workdir + f"/e-{spec.job_id}.err"
    for path in (spec.output_path, err):
        with open(path, "w") as f:  # type: ignore[arg-type]
            f.write("old\n")
        os.chown(path, user.pw_uid, user.pw_gid)  # type: ignore[arg-type]
    info, out = run_to_end(executor, dataclasses.replace(spec, error_path=err))
    assert info.exit_code == 0 and out == "old\nout\n" and read(err) == "old\nerr\n"
    info, out = run_to_end(executor, dataclasses.replace(spec, job_id=spec.job_id + 1000, error_path=err,
                                                         truncate=True))
    assert out == "out\n" and read(err) == "err\n"
    assert os.stat(err).st_uid == user.pw_uid


def test_cpu_only_job_sees_no_gpu(executor: ProcessExecutor, make_spec: Callable[..., LaunchSpec]) -> None:
    spec = make_spec(["sh", "-c", 'echo "nv=$NVIDIA_VISIBLE_DEVICES cvd=[$CUDA_VISIBLE_DEVICES]"'],
                     env={"CUDA_VISIBLE_DEVICES": "0", "NVIDIA_VISIBLE_DEVICES": "all"})
    _, out = run_to_end(executor, spec)
    assert out == "nv=void cvd=[]\n"


def test_exit_codes(executor: ProcessExecutor, make_spec: Callable[..., LaunchSpec]) -> None:
    info, _ = run_to_end(executor, make_spec(["sh", "-c", "exit 3"]))
    assert (info.exit_code, info.oom_killed) == (3, False)
    info, _ = run_to_end(executor, make_spec(["sh", "-c", "kill -9 $$"]))
    assert info.exit_code == 137
    info, out = run_to_end(executor, make_spec(["no-such-program-ds01q"]))
    assert info.exit_code == 127 and "cannot execute no-such-program-ds01q" in out


def test_memory_limit_oom_kill(executor: ProcessExecutor, make_spec: Callable[..., LaunchSpec],
                               has_cgroups: bool) -> None:
    if not has_cgroups:
        unless_root("no writable memory cgroup: OOM is not detected without one (documented)")
    spec = make_spec(["sh", "-c", "head -c 100m /dev/zero | tail > /dev/null"], mem_bytes=32 * 2**20)
    info, _ = run_to_end(executor, spec)
    assert info.oom_killed is True and info.exit_code != 0
    assert info.max_rss_bytes is not None and info.max_rss_bytes <= 40 * 2**20


def test_no_oom_flag_for_a_job_within_its_limit(executor: ProcessExecutor,
                                                make_spec: Callable[..., LaunchSpec]) -> None:
    info, _ = run_to_end(executor, make_spec(["sh", "-c", "head -c 1m /dev/zero | tail > /dev/null"],
                                             mem_bytes=64 * 2**20))
    assert (info.exit_code, info.oom_killed) == (0, False)


def test_cpu_time_matches_what_the_job_measured(executor: ProcessExecutor,
                                                make_spec: Callable[..., LaunchSpec]) -> None:
    spec = make_spec(["sh", "-c", "timeout 2 sh -c 'while :; do :; done'; cat /proc/$$/stat"])
    info, out = run_to_end(executor, spec)
    fields = out.strip().splitlines()[-1].rsplit(")", 1)[1].split()
    measured = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    assert measured > 0.3, f"the burn got too little CPU to compare ({measured} s)"
    assert info.cpu_s is not None
    assert abs(info.cpu_s - measured) <= 0.3 * measured, (info.cpu_s, measured)


def test_limits_are_applied_to_the_job_cgroup(executor: ProcessExecutor, make_spec: Callable[..., LaunchSpec],
                                              has_cgroups: bool) -> None:
    if not has_cgroups:
        unless_root("no writable cgroups")
    spec = make_spec(["sleep", "30"], cpus=0.5, mem_bytes=48 * 2**20, pids_limit=32)
    h = executor.launch(spec)
    try:
        path = json.loads(read(os.path.join(executor.state_dir, f"{spec.job_id}.pid")))["cgroup"]
        assert path == f"{CGROUP_ROOT}/job-{spec.job_id}"
        pids = cgroups.cgroup_pids(path)
        assert len(pids) == 1 and pids[0] != int(h.ref)  # the job, not its supervisor
        mounts = cgroups.cgroup_mounts()
        mem = next(m for m in mounts if "memory" in m.controllers)
        d = os.path.join(mem.mountpoint, path.lstrip("/"))
        limit_file = "memory.limit_in_bytes" if mem.version == 1 else "memory.max"
        assert int(read(os.path.join(d, limit_file))) == 48 * 2**20
        usage = executor.sample(h)
        assert usage is not None and usage.mem_bytes >= 0
    finally:
        executor.stop(h, 1)
        executor.remove(h)
    assert cgroups.read_cgroup_usage_path(path) is None  # removed


def test_leftover_processes_are_killed_when_the_job_ends(executor: ProcessExecutor,
                                                         make_spec: Callable[..., LaunchSpec],
                                                         has_cgroups: bool, workdir: str) -> None:
    if not has_cgroups:
        unless_root("a setsid'ed process leaves the process group; only a cgroup catches it")
    pidfile = os.path.join(workdir, "stray.pid")
    spec = make_spec(["sh", "-c", f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' & sleep 0.3; exit 0"])
    info, _ = run_to_end(executor, spec)
    assert info.exit_code == 0
    stray = int(read(pidfile))
    assert not _alive(stray)


# ------------------------------------------------------------------ stop, restart, watch

def test_stop_is_quick_and_idempotent(executor: ProcessExecutor, make_spec: Callable[..., LaunchSpec]) -> None:
    h = executor.launch(make_spec(["sleep", "300"]))
    assert executor.poll(h) is None
    assert executor.running() == {h.job_id: h}
    t0 = time.monotonic()
    executor.stop(h, 10)
    info = executor.poll(h)
    executor.remove(h)
    assert time.monotonic() - t0 < 2.0
    assert info is not None and info.exit_code == 143
    executor.stop(h, 10)
    executor.remove(h)
    assert executor.running() == {}
    assert executor.sample(h) is None


def test_stop_escalates_to_sigkill_after_grace(executor: ProcessExecutor,
                                               make_spec: Callable[..., LaunchSpec]) -> None:
    h = executor.launch(make_spec(["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]))
    time.sleep(0.2)  # let the shell install its trap
    executor.stop(h, 0.5)
    info = executor.poll(h)
    executor.remove(h)
    assert info is not None and info.exit_code == 137 and not info.oom_killed


def test_jobs_survive_a_daemon_restart(state_dir: str, make_spec: Callable[..., LaunchSpec],
                                       has_cgroups: bool) -> None:
    first = ProcessExecutor(state_dir, cgroup_root=CGROUP_ROOT)
    long_spec = make_spec(["sleep", "300"])
    short_spec = make_spec(["sh", "-c", "sleep 0.5; exit 7"])
    long_h = first.launch(long_spec)
    short_h = first.launch(short_spec)
    first.close()
    del first  # the "daemon" is gone; its supervisors are not

    second = ProcessExecutor(state_dir, cgroup_root=CGROUP_ROOT)
    try:
        assert second.running().get(long_spec.job_id) == long_h
        info = wait_exit(second, Handle(short_spec.job_id, short_h.ref))
        assert info.exit_code == 7
        assert second.sample(long_h) is not None
        second.stop(long_h, 5)
        info = wait_exit(second, long_h)
        assert info.exit_code == 143
        assert second.running() == {}
    finally:
        for h in (long_h, short_h):
            second.stop(h, 0)
            second.remove(h)
        second.close()


def test_stale_pidfile_with_reused_pid_is_not_running(executor: ProcessExecutor) -> None:
    # The recorded pid now belongs to an unrelated process (another start time):
    # it must not be adopted, and stop() must not signal it or its group.
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        with open(os.path.join(executor.state_dir, "424242.pid"), "w") as f:
            json.dump({"job_id": 424242, "pid": bystander.pid, "start": 2**62, "child": bystander.pid,
                       "child_start": 2**62, "cgroup": None}, f)
        h = Handle(424242, str(bystander.pid))
        assert executor.running() == {}
        info = executor.poll(h)
        assert info is not None and info.exit_code is None and "supervisor died" in info.error
        executor.stop(h, 0)
        executor.remove(h)
        assert bystander.poll() is None and _alive(bystander.pid)
        assert not os.path.exists(os.path.join(executor.state_dir, "424242.pid"))
    finally:
        bystander.kill()
        bystander.wait()


def test_watch_reports_exits(executor: ProcessExecutor, make_spec: Callable[..., LaunchSpec]) -> None:
    exited: list[int] = []
    seen = threading.Event()

    def on_exit(jid: int) -> None:
        exited.append(jid)
        seen.set()

    executor.watch(on_exit)
    spec = make_spec([], interactive=True, output_path=None)
    h = executor.launch(spec)
    try:
        assert executor.poll(h) is None
        assert not seen.wait(0.5)
        executor.stop(h, 5)
        assert seen.wait(10)
        assert exited == [spec.job_id]
        info = executor.poll(h)
        assert info is not None and info.exit_code == 0  # the keepalive exits 0 on SIGTERM
    finally:
        executor.remove(h)


# ------------------------------------------------------------------ launch failures

def test_bad_workdir_fails_launch_and_leaves_nothing(executor: ProcessExecutor,
                                                     make_spec: Callable[..., LaunchSpec]) -> None:
    spec = make_spec(["true"], workdir="/nonexistent/ds01q", output_path=None)
    with pytest.raises(ExecutorError, match=r"cannot start job \d+: workdir /nonexistent/ds01q: No such file"):
        executor.launch(spec)
    assert os.listdir(executor.state_dir) == []
    assert cgroups.read_cgroup_usage_path(f"{CGROUP_ROOT}/job-{spec.job_id}") is None


def test_output_file_is_opened_as_the_user(executor: ProcessExecutor, make_spec: Callable[..., LaunchSpec],
                                           user: pwd.struct_passwd, workdir: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    target = os.path.join(workdir, "root-owned")
    with open(target, "w") as f:
        f.write("secret\n")
    os.chmod(target, 0o600)
    spec = make_spec(["true"], output_path=target)
    with pytest.raises(ExecutorError, match="output file .*: Permission denied"):
        executor.launch(spec)
    os.symlink(target, os.path.join(workdir, "evil.out"))
    with pytest.raises(ExecutorError, match="output file"):
        executor.launch(make_spec(["true"], output_path=os.path.join(workdir, "evil.out")))
    assert read(target) == "secret\n" and os.stat(target).st_uid == 0


def test_relaunch_of_a_running_job_is_refused(executor: ProcessExecutor,
                                              make_spec: Callable[..., LaunchSpec]) -> None:
    spec = make_spec(["sleep", "300"])
    h = executor.launch(spec)
    try:
        with pytest.raises(ExecutorError, match="already running"):  # another attempt while one runs
            executor.launch(dataclasses.replace(spec, attempt=spec.attempt + 1))
    finally:
        executor.stop(h, 0)
        executor.remove(h)


def test_without_cgroups_usage_comes_from_proc_and_rusage(state_dir: str,
                                                          make_spec: Callable[..., LaunchSpec]) -> None:
    ex = ProcessExecutor(state_dir, use_cgroups=False)
    try:
        h = ex.launch(make_spec(["sh", "-c", "sleep 30"], mem_bytes=32 * 2**20))
        deadline = time.monotonic() + 5  # right after exec, RSS can still read 0
        usage = ex.sample(h)
        while usage is not None and usage.mem_bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            usage = ex.sample(h)
        assert usage is not None and usage.mem_bytes > 0 and usage.max_rss_bytes is None
        ex.stop(h, 5)
        ex.remove(h)
        spec = make_spec(["sh", "-c", "timeout 1 sh -c 'while :; do :; done'; cat /proc/$$/stat; exit 4"])
        info, out = run_to_end(ex, spec)
        fields = out.strip().splitlines()[-1].rsplit(")", 1)[1].split()
        measured = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        assert info.exit_code == 4 and info.oom_killed is False
        assert info.cpu_s is not None and measured > 0.2
        assert abs(info.cpu_s - measured) <= 0.3 * measured, (info.cpu_s, measured)
        assert info.max_rss_bytes is not None and info.max_rss_bytes > 0
    finally:
        ex.close()


def test_one_attempt_runs_once_however_often_it_is_launched(executor: ProcessExecutor,
                                                            make_spec: Callable[..., LaunchSpec]) -> None:
    spec = make_spec(["/bin/sh", "-c", "echo ran; sleep 0.5"], attempt=3)
    first = executor.launch(spec)
    assert executor.launch(spec) == first
    assert wait_exit(executor, first).exit_code == 0
    assert executor.launch(spec) == first  # exited, not removed: reported, never run again
    (found,) = [f for f in executor.containers() if f.handle.job_id == spec.job_id]
    assert (found.attempt, found.exit.exit_code if found.exit else None) == (3, 0)
    assert read(spec.output_path).count("ran") == 1
    executor.remove(first)
    assert [f for f in executor.containers() if f.handle.job_id == spec.job_id] == []
    second = executor.launch(dataclasses.replace(spec, attempt=4))
    assert wait_exit(executor, second).exit_code == 0 and read(spec.output_path).count("ran") == 2
    executor.remove(second)


def test_signal_reaches_the_job_and_it_keeps_running_until_it_acts(executor: ProcessExecutor,
                                                                   make_spec: Callable[..., LaunchSpec]) -> None:
    spec = make_spec(["sh", "-c", "trap 'echo got usr1; exit 3' USR1; echo ready; while :; do sleep 0.1; done"])
    h = executor.launch(spec)
    try:
        deadline = time.monotonic() + 10
        while "ready" not in read(spec.output_path) and time.monotonic() < deadline:
            time.sleep(0.05)  # the trap is installed before "ready"
        executor.signal(h, signal.SIGUSR1)
        info = wait_exit(executor, h)
    finally:
        executor.remove(h)
    assert info.exit_code == 3 and "got usr1" in read(spec.output_path)
    with pytest.raises(ExecutorError, match="not running"):
        executor.signal(h, signal.SIGUSR1)
