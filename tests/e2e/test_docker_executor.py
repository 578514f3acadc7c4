"""DockerExecutor against the real engine and the local image ds01q/busybox:test.

Needs root (a real Unix user is created) and a Docker engine: run
scripts/ci-services.sh first. Containers are named ds01q-t<pid>-<job> and
labelled with a per-session instance so parallel sessions do not collide.
"""
from __future__ import annotations

import dataclasses
import os
import pwd
import random
import shutil
import signal
import socket
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
from ds01q.executors.docker_api import parse_docker_time

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

IMAGE = "ds01q/busybox:test"
TEST_USER = "ds01qtest1"
INSTANCE = f"pytest-{os.getpid()}"


def _engine() -> Any:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means no engine
        pytest.skip(f"no Docker engine ({type(e).__name__}): run scripts/ci-services.sh")
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {IMAGE} is missing: run scripts/ci-services.sh")
    return client


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    c = _engine()
    yield c
    for ct in c.containers.list(all=True, filters={"label": f"ds01q.instance={INSTANCE}"}):
        ct.remove(force=True)
    c.close()


@pytest.fixture(scope="module")
def user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a test user")
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        res = subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", TEST_USER], capture_output=True, text=True)
        if res.returncode not in (0, 9):  # 9: created meanwhile by someone else
            pytest.fail(f"useradd failed: {res.stderr.strip()}")
        return pwd.getpwnam(TEST_USER)


@pytest.fixture
def workdir(user: pwd.struct_passwd) -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ds01q-dx-", dir="/tmp")
    os.chmod(d, 0o755)
    os.chown(d, user.pw_uid, user.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def executor(client: Any) -> Iterator[Any]:
    from ds01q.executors.docker import DockerExecutor

    ex = DockerExecutor(client, name_prefix=f"ds01q-t{os.getpid()}", instance=INSTANCE)
    yield ex
    ex.close()


_next = [random.randrange(10**8, 9 * 10**8)]


def job_id() -> int:
    _next[0] += 1
    return _next[0]


@pytest.fixture
def make_spec(user: pwd.struct_passwd, workdir: str, executor: Any) -> Callable[..., LaunchSpec]:
    def make(command: list[str], **over: Any) -> LaunchSpec:
        jid = over.pop("job_id", None) or job_id()
        kw: dict[str, Any] = dict(
            job_id=jid, name=f"t{jid}", user=user.pw_name, uid=user.pw_uid, gid=user.pw_gid, group="student",
            image=IMAGE, command=command, workdir=workdir, env={"HOME": workdir, "DS01Q_JOB_ID": str(jid)},
            slices=[], gpu_runtime="none", output_path=os.path.join(workdir, f"ds01q-{jid}.out"),
        )
        kw.update(over)
        return LaunchSpec(**kw)

    return make


def read(path: str | None) -> str:
    with open(path or os.devnull) as f:
        return f.read()


def wait_exit(executor: Any, h: Handle, timeout_s: float = 30) -> ExitInfo:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = executor.poll(h)
        if info is not None:
            return info
        time.sleep(0.05)
    raise AssertionError(f"job {h.job_id} still running after {timeout_s} s")


def run_to_end(executor: Any, spec: LaunchSpec) -> tuple[ExitInfo, str]:
    h = executor.launch(spec)
    try:
        info = wait_exit(executor, h)
    finally:
        executor.remove(h)
    return info, read(spec.output_path)


# ------------------------------------------------------------------ batch jobs

def test_batch_output_env_and_user(executor: Any, make_spec: Callable[..., LaunchSpec],
                                   user: pwd.struct_passwd, client: Any) -> None:
    slices = ["MIG-11111111-2222-3333-4444-555555555555", "MIG-66666666-7777-8888-9999-000000000000"]
    spec = make_spec(
        ["sh", "-c", 'echo "cvd=$CUDA_VISIBLE_DEVICES"; echo "nv=$NVIDIA_VISIBLE_DEVICES"; '
                     'echo "uid=$(id -u) gid=$(id -g)"; echo "pwd=$(pwd)"; echo oops >&2'],
        slices=slices, labels={"team": "nlp"},
    )
    h = executor.launch(spec)
    attrs = client.api.inspect_container(h.ref)
    info = wait_exit(executor, h)
    executor.remove(h)
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(h.ref)

    assert info.exit_code == 0 and not info.oom_killed and info.error == ""
    assert info.finished_at is not None and abs(info.finished_at - time.time()) < 300
    out = read(spec.output_path).splitlines()  # type: ignore[arg-type]
    assert out == [f"cvd={','.join(slices)}", f"nv={','.join(slices)}",
                   f"uid={user.pw_uid} gid={user.pw_gid}", f"pwd={spec.workdir}", "oops"]
    st = os.stat(spec.output_path)  # type: ignore[arg-type]
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (user.pw_uid, user.pw_gid, 0o644)

    labels = attrs["Config"]["Labels"]
    assert labels["ds01q.job"] == str(spec.job_id)
    assert labels["ds01q.user"] == labels["ds01.user"] == user.pw_name
    assert labels["ds01q.group"] == "student"
    assert labels["ds01.gpu.uuids"] == ",".join(slices)
    assert labels["team"] == "nlp"
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == f"{user.pw_uid}:{user.pw_gid}"
    assert host["Privileged"] is False
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["CapDrop"] == ["ALL"]
    assert attrs["Name"] == f"/{executor.container_name(spec.job_id)}"


def test_cpu_only_job_sees_no_gpu(executor: Any, make_spec: Callable[..., LaunchSpec]) -> None:
    spec = make_spec(["sh", "-c", 'echo "nv=$NVIDIA_VISIBLE_DEVICES"; echo "cvd=[$CUDA_VISIBLE_DEVICES]"'],
                     env={"CUDA_VISIBLE_DEVICES": "0", "NVIDIA_VISIBLE_DEVICES": "all"})
    info, out = run_to_end(executor, spec)
    assert info.exit_code == 0
    assert out.splitlines() == ["nv=void", "cvd=[]"]


def test_exit_code_is_reported(executor: Any, make_spec: Callable[..., LaunchSpec]) -> None:
    info, _ = run_to_end(executor, make_spec(["sh", "-c", "exit 3"]))
    assert (info.exit_code, info.oom_killed) == (3, False)


def test_missing_command_exits_127_with_message_in_output(executor: Any,
                                                          make_spec: Callable[..., LaunchSpec]) -> None:
    info, out = run_to_end(executor, make_spec(["no-such-program", "x"]))
    assert info.exit_code == 127
    assert "no-such-program" in out


def test_memory_limit_oom_kill(executor: Any, make_spec: Callable[..., LaunchSpec]) -> None:
    # tail keeps the whole newline-free input in memory: 100 MiB against a 32 MiB limit, no swap.
    spec = make_spec(["sh", "-c", "head -c 100m /dev/zero | tail > /dev/null"], mem_bytes=32 * 2**20)
    info, _ = run_to_end(executor, spec)
    assert info.oom_killed is True
    assert info.exit_code != 0
    assert info.max_rss_bytes is not None and info.max_rss_bytes <= 40 * 2**20


@pytest.mark.parametrize("command, mem, code, oom", [
    (["sh", "-c", "sleep 1; exit 3"], None, 3, False),
    (["sh", "-c", "head -c 100m /dev/zero | tail > /dev/null"], 32 * 2**20, None, True),
])
def test_an_exit_is_told_by_the_events_without_an_inspect(client: Any, make_spec: Callable[..., LaunchSpec],
                                                          monkeypatch: pytest.MonkeyPatch, command: list[str],
                                                          mem: int | None, code: int | None, oom: bool) -> None:
    """A container this executor started: once its die event came, ``poll`` answers from the event (exit
    code, time), the oom event and the job's cgroup (CPU, peak memory), with the engine's inspect refused."""
    from ds01q.executors.docker import DockerExecutor

    ex = DockerExecutor(client, name_prefix=f"ds01q-t{os.getpid()}e", instance=INSTANCE)
    died = threading.Event()
    ex.watch(lambda _jid: died.set())
    spec = make_spec(command, **({"mem_bytes": mem} if mem else {}))
    t0 = time.time()
    h = ex.launch(spec)
    try:
        assert died.wait(30), "no die event"
        attrs = client.api.inspect_container(h.ref)["State"]

        def refused(*_a: Any, **_k: Any) -> Any:
            raise AssertionError("inspected")

        monkeypatch.setattr(ex.client.api, "inspect_container", refused)
        info = ex.poll(h)
        assert info is not None and info.oom_killed is oom
        assert info.exit_code == attrs["ExitCode"] and (code is None or info.exit_code == code)
        assert info.started_at is not None and info.finished_at is not None
        assert t0 <= info.started_at <= info.finished_at <= time.time()
        assert abs(info.finished_at - parse_docker_time(attrs["FinishedAt"])) < 1.0
        assert info.cpu_s is not None and info.max_rss_bytes is not None
        if oom:
            assert info.max_rss_bytes <= 40 * 2**20
        monkeypatch.undo()
    finally:
        ex.remove(h)
        ex.close()


def test_the_users_network_is_looked_up_once_per_executor(client: Any, make_spec: Callable[..., LaunchSpec],
                                                         user: pwd.struct_passwd,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's network found (not created) by a first launch is not listed again at the next: one
    engine call less per launch."""
    from ds01q.executors.docker import DockerExecutor
    from ds01q.executors.docker_net import ensure_user_network

    ensure_user_network(client, user.pw_uid, user.pw_name)  # it exists before this executor's first launch
    ex = DockerExecutor(client, name_prefix=f"ds01q-t{os.getpid()}n", instance=INSTANCE, network="per-user")
    handles = []
    try:
        handles.append(ex.launch(make_spec(["true"])))

        def refused(*_a: Any, **_k: Any) -> Any:
            raise AssertionError("networks listed again")

        monkeypatch.setattr(ex.client.api, "networks", refused)  # what networks.list calls
        handles.append(ex.launch(make_spec(["true"])))
        assert wait_exit(ex, handles[-1]).exit_code == 0
    finally:
        for h in handles:
            ex.remove(h)
        ex.close()


def test_the_job_cgroups_a_killed_daemon_left_are_dropped_and_live_ones_kept(client: Any,
                                                                           make_spec: Callable[..., LaunchSpec]) -> None:
    from ds01q.executors.docker import DockerExecutor

    prefix = f"ds01q-t{os.getpid()}k"
    ex = DockerExecutor(client, name_prefix=prefix, instance=INSTANCE)
    if not ex.job_cgroups:
        pytest.skip("job cgroups need the cgroupfs driver")
    ended, alive = ex.launch(make_spec(["true"])), ex.launch(make_spec(["sleep", "30"]))
    try:
        wait_exit(ex, ended)
        mem = {h.job_id: cgroups.controller_dir("memory", client.api.inspect_container(h.ref)["Config"]["Labels"]
                                                ["ds01q.cgroup"]) for h in (ended, alive)}
        client.api.remove_container(ended.ref, force=True)  # the container goes, as after a daemon's kill
        assert all(d and os.path.isdir(d) for d in mem.values()), mem  # its job cgroup stays
        assert DockerExecutor.drop_leftovers(prefix) >= 1
        assert not os.path.isdir(mem[ended.job_id]) and os.path.isdir(mem[alive.job_id])
    finally:
        ex.remove(alive)
        ex.close()


def test_a_new_executor_drops_the_job_cgroups_whose_container_is_gone_and_keeps_the_others(
        client: Any, make_spec: Callable[..., LaunchSpec]) -> None:
    """A daemon killed between a container's removal and its cgroup's: its next start (a new executor of
    the instance) removes that cgroup, and leaves the cgroups of containers that still exist, running or
    exited (an exit not recorded yet is measured from its cgroup)."""
    from ds01q.executors.docker import DockerExecutor

    prefix = f"ds01q-t{os.getpid()}o"
    ex = DockerExecutor(client, name_prefix=prefix, instance=INSTANCE)
    if not ex.job_cgroups:
        pytest.skip("job cgroups need the cgroupfs driver")
    gone, exited = ex.launch(make_spec(["true"])), ex.launch(make_spec(["true"]))
    alive = ex.launch(make_spec(["sleep", "30"]))
    again = None
    try:
        for h in (gone, exited):
            wait_exit(ex, h)
        dirs = {h.job_id: [d for d in (cgroups.controller_dir(c, client.api.inspect_container(h.ref)["Config"]
                                                              ["Labels"]["ds01q.cgroup"]) for c in ("memory", "pids"))
                           if d] for h in (gone, exited, alive)}
        client.api.remove_container(gone.ref, force=True)  # the container goes, its cgroup stays (a kill)
        assert all(ds and all(os.path.isdir(d) for d in ds) for ds in dirs.values()), dirs
        again = DockerExecutor(client, name_prefix=prefix, instance=INSTANCE)
        assert not any(os.path.isdir(d) for d in dirs[gone.job_id])
        assert all(os.path.isdir(d) for h in (exited, alive) for d in dirs[h.job_id])
        info = again.poll(exited)
        assert info is not None and info.exit_code == 0 and info.cpu_s is not None
    finally:
        for h in (exited, alive):
            ex.remove(h)
        ex.close()
        if again is not None:
            again.close()


def test_cpu_time_matches_what_the_job_measured(executor: Any, make_spec: Callable[..., LaunchSpec]) -> None:
    # The job burns ~2 s in a child and prints its own children's CPU ticks (cutime+cstime);
    # comparing with that (not wall time) keeps the test valid on a busy machine.
    spec = make_spec(["sh", "-c", "timeout 2 sh -c 'while :; do :; done'; cat /proc/$$/stat"])
    info, out = run_to_end(executor, spec)
    fields = out.strip().splitlines()[-1].rsplit(")", 1)[1].split()
    measured = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    assert measured > 0.3, f"the burn got too little CPU to compare ({measured} s)"
    assert info.cpu_s is not None
    assert abs(info.cpu_s - measured) <= 0.3 * measured, (info.cpu_s, measured)


def test_cgroup_parent_with_the_engines_driver(executor: Any, make_spec: Callable[..., LaunchSpec],
                                               client: Any) -> None:
    driver = executor.cgroup_driver()
    assert driver == client.info()["CgroupDriver"]
    parent = cgroups.cgroup_parent(driver, "ds01q", "student", "h.baker@lab.example")
    spec = make_spec(["sleep", "30"], cgroup_parent=parent, cpus=0.5, pids_limit=64, shm_bytes=8 * 2**20,
                     mem_bytes=64 * 2**20)
    h = executor.launch(spec)
    try:
        attrs = client.api.inspect_container(h.ref)
        host = attrs["HostConfig"]
        assert (host["NanoCpus"], host["PidsLimit"], host["ShmSize"]) == (500_000_000, 64, 8 * 2**20)
        assert host["Memory"] == host["MemorySwap"] == 64 * 2**20
        paths = cgroups.pid_cgroups(attrs["State"]["Pid"])
        where = paths.get("memory") or paths.get("")
        assert where is not None
        if driver == "systemd":
            assert "/ds01q.slice/ds01q-student.slice/ds01q-student-h_baker.slice/" in where
        else:
            assert where.startswith("/ds01q.slice/ds01q-student.slice/ds01q-student-h_baker.slice/")
        assert attrs["Id"] in where
        usage = executor.sample(h)
        assert usage is not None and usage.mem_bytes > 0
    finally:
        executor.stop(h, 1)
        executor.remove(h)


# ------------------------------------------------------------------ stop, interactive, recovery, events

def test_stop_is_quick_and_idempotent(executor: Any, make_spec: Callable[..., LaunchSpec], client: Any) -> None:
    h = executor.launch(make_spec(["sleep", "300"]))
    assert executor.poll(h) is None
    assert h.job_id in executor.running()
    t0 = time.monotonic()
    executor.stop(h, 10)
    executor.remove(h)
    gone_after = time.monotonic() - t0
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(h.ref)
    assert gone_after < 2.0, f"stop+remove took {gone_after:.1f} s"
    executor.stop(h, 10)
    executor.remove(h)
    assert h.job_id not in executor.running()
    assert executor.sample(h) is None


def test_interactive_job_exec_tty_and_watch(executor: Any, make_spec: Callable[..., LaunchSpec],
                                            user: pwd.struct_passwd) -> None:
    exited: list[int] = []
    seen = threading.Event()

    def on_exit(jid: int) -> None:
        exited.append(jid)
        seen.set()

    executor.watch(on_exit)
    spec = make_spec([], interactive=True, output_path=None, slices=["MIG-aaaa"])
    h = executor.launch(spec)
    try:
        assert executor.running()[spec.job_id] == h
        assert executor.sample(h) is not None
        sock, exec_id = executor.exec_tty(h, ["sh", "-c", 'echo "hi $CUDA_VISIBLE_DEVICES $X"; id -u; exit 5'],
                                          f"{user.pw_uid}:{user.pw_gid}", {"X": "y"}, spec.workdir)
        assert isinstance(sock, socket.socket)
        executor.exec_resize(exec_id, 40, 120)
        data = b""
        sock.settimeout(10)
        while chunk := sock.recv(4096):
            data += chunk
        sock.close()
        assert data.replace(b"\r\n", b"\n") == f"hi MIG-aaaa y\n{user.pw_uid}\n".encode()
        deadline = time.monotonic() + 10
        code = executor.exec_exit_code(exec_id)
        while code is None and time.monotonic() < deadline:
            time.sleep(0.05)
            code = executor.exec_exit_code(exec_id)
        assert code == 5
        executor.stop(h, 10)
        info = wait_exit(executor, h)
        assert info.exit_code == 0  # the keepalive exits cleanly on SIGTERM
        assert seen.wait(10), "watch() did not report the exit"
        assert spec.job_id in exited
    finally:
        executor.remove(h)


def test_a_new_executor_finds_running_jobs(client: Any, executor: Any,
                                           make_spec: Callable[..., LaunchSpec]) -> None:
    from ds01q.executors.docker import DockerExecutor

    spec = make_spec(["sh", "-c", "sleep 300"])
    h = executor.launch(spec)
    try:
        again = DockerExecutor(client, name_prefix=executor.name_prefix, instance=INSTANCE)
        found = again.running()
        assert found[spec.job_id] == h
        assert again.sample(Handle(spec.job_id, "")) is not None  # ref unknown: found by name
        again.stop(found[spec.job_id], 5)
        info = wait_exit(again, found[spec.job_id])
        assert info.exit_code in (143, 137) and not info.oom_killed
        assert spec.job_id not in again.running()
    finally:
        executor.remove(h)


# ------------------------------------------------------------------ launch failures

def _no_container(client: Any, executor: Any, jid: int) -> bool:
    try:
        client.api.inspect_container(executor.container_name(jid))
    except docker.errors.NotFound:
        return True
    return False


def test_start_failure_removes_the_container(executor: Any, make_spec: Callable[..., LaunchSpec],
                                             client: Any) -> None:
    if shutil.which("nvidia-container-runtime-hook") or "nvidia" in client.info().get("Runtimes", {}):
        pytest.skip("this engine has the NVIDIA runtime, so a GPU request would start")
    spec = make_spec(["true"], gpu_runtime="nvidia", slices=["MIG-deadbeef-0000-0000-0000-000000000000"])
    with pytest.raises(ExecutorError) as e:
        executor.launch(spec)
    msg = str(e.value)
    assert "\n" not in msg and f"job {spec.job_id}" in msg
    assert _no_container(client, executor, spec.job_id)


def test_missing_image_and_workdir_are_one_line_errors(executor: Any, make_spec: Callable[..., LaunchSpec],
                                                       client: Any) -> None:
    spec = make_spec(["true"], image="ds01q/does-not-exist:never")
    with pytest.raises(ExecutorError, match="image 'ds01q/does-not-exist:never' is not on this node"):
        executor.launch(spec)
    assert _no_container(client, executor, spec.job_id)
    spec = make_spec(["true"], workdir="/nonexistent/ds01q")
    with pytest.raises(ExecutorError, match="working directory /nonexistent/ds01q does not exist"):
        executor.launch(spec)
    assert _no_container(client, executor, spec.job_id)


def test_output_file_cannot_be_redirected_through_a_symlink(executor: Any, make_spec: Callable[..., LaunchSpec],
                                                            workdir: str) -> None:
    target = os.path.join(workdir, "root-owned")
    with open(target, "w") as f:
        f.write("secret\n")
    os.chmod(target, 0o600)  # root's file, not writable by the user
    link = os.path.join(workdir, "evil.out")
    os.symlink(target, link)
    spec = make_spec(["true"], output_path=link)
    with pytest.raises(ExecutorError, match="cannot create output file"):
        executor.launch(spec)
    assert os.stat(target).st_uid == 0 and read(target) == "secret\n"


def test_one_attempt_runs_once_however_often_it_is_launched(executor: Any, make_spec: Callable[..., LaunchSpec]) -> None:
    spec = make_spec(["/bin/sh", "-c", "echo ran-$DS01Q_JOB_ID; sleep 1"], attempt=1)
    first = executor.launch(spec)
    try:
        assert executor.launch(spec) == first  # running: the same container, not a second one
        info = wait_exit(executor, first)
        assert info.exit_code == 0 and info.started_at is not None and info.finished_at is not None
        assert info.finished_at - info.started_at >= 0.9
        assert executor.launch(spec) == first  # exited: found and reported, never run again
        (found,) = [f for f in executor.containers() if f.handle.job_id == spec.job_id]
        assert (found.handle, found.attempt, found.exit.exit_code) == (first, 1, 0)
        assert read(spec.output_path).count(f"ran-{spec.job_id}") == 1
        attrs = executor.client.api.inspect_container(first.ref)
        assert attrs["Name"] == f"/{executor.container_name(spec.job_id, 1)}"
        assert attrs["Config"]["Labels"]["ds01q.attempt"] == "1"
    finally:
        executor.remove(first)
    second = executor.launch(dataclasses.replace(spec, attempt=2))  # the next attempt is a new container
    try:
        assert second.ref != first.ref and wait_exit(executor, second).exit_code == 0
        assert read(spec.output_path).count(f"ran-{spec.job_id}") == 2
    finally:
        executor.remove(second)
    assert [f for f in executor.containers() if f.handle.job_id == spec.job_id] == []
    # attempt 3 was created and never started (a daemon killed in between): launching it makes it again
    third = dataclasses.replace(spec, attempt=3)
    stale = executor._create(executor._create_kwargs(third))
    h = executor.launch(third)
    try:
        assert h.ref != stale and wait_exit(executor, h).exit_code == 0
        assert read(spec.output_path).count(f"ran-{spec.job_id}") == 3
        with pytest.raises(docker.errors.NotFound):
            executor.client.api.inspect_container(stale)
    finally:
        executor.remove(h)


def test_signal_reaches_the_job_and_it_keeps_running_until_it_acts(executor: Any,
                                                                   make_spec: Callable[..., LaunchSpec]) -> None:
    spec = make_spec(["sh", "-c", "trap 'echo got usr1; exit 3' USR1; echo ready; while :; do sleep 0.1; done"])
    h = executor.launch(spec)
    try:
        deadline = time.monotonic() + 20
        while "ready" not in read(spec.output_path) and time.monotonic() < deadline:
            time.sleep(0.05)  # the trap is installed before "ready"
        executor.signal(h, signal.SIGUSR1)
        info = wait_exit(executor, h)
    finally:
        executor.remove(h)
    assert info.exit_code == 3 and "got usr1" in read(spec.output_path)
    with pytest.raises(ExecutorError, match="cannot signal job|its container is gone"):
        executor.signal(h, signal.SIGUSR1)
