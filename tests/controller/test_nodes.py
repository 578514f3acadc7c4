"""Several nodes, without Docker or Redis: heartbeats, DOWN after missed ones (jobs end
NODE_FAIL, batch jobs requeue, nothing is placed there), DRAINED, and exits recorded once.
On SQLite and PostgreSQL."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from ds01q.db import nodes
from ds01q.inventory.static import static_inventory
from ds01q.inventory.sync import sync
from ds01q.scheduler.cycle import without_unavailable_nodes
from ds01q.scheduler.snapshot import Snapshot
from ds01q.types import JobState, SliceInfo
from tests.controller.test_controller import GPU, SLICES, T0, Harness, config_data, db_url  # noqa: F401

GPU2 = "GPU-00000000-0000-0000-0000-000000000002"
SLICES2 = [f"MIG-00000000-0000-0000-0000-0000000002{i}" for i in (1, 2, 3)]


class NodesHarness(Harness):
    def write_config(self, slices: list[str]) -> None:
        data: dict[str, Any] = config_data(self.tmp_path, slices)
        data["dispatch"] = {"kind": "rq", "redis": "redis://127.0.0.1:1/0", "heartbeat": "1s", "missed_heartbeats": 3}
        self.config_path.write_text(yaml.safe_dump(data))

    def register(self) -> None:
        gpus = {"n1": [{"uuid": GPU, "name": "NVIDIA A100-PCIE-40GB",
                        "mig": [{"uuid": u, "profile": "2g.10gb"} for u in SLICES]}],
                "n2": [{"uuid": GPU2, "name": "NVIDIA A100-PCIE-40GB",
                        "mig": [{"uuid": u, "profile": "2g.10gb"} for u in SLICES2]}]}
        with self.sessions.begin() as s:
            for node, g in gpus.items():
                sync(s, static_inventory(g, node=node), self.clock.now(), node=node)
                nodes.heartbeat(s, node, self.clock.now(), {})

    def beat(self, *names: str) -> None:
        with self.sessions.begin() as s:
            for n in names:
                nodes.heartbeat(s, n, self.clock.now(), {})

    def node_state(self, name: str) -> str:
        with self.sessions() as s:
            n = nodes.get(s, name)
            assert n is not None
            return n.state

    def on_node(self, name: str) -> list[int]:
        uuids = set(SLICES if name == "n1" else SLICES2)
        return sorted(j for j, u in self.active_allocations() if u in uuids)


@pytest.fixture
def nh(tmp_path: Path, db_url: str) -> Iterator[NodesHarness]:  # noqa: F811
    harness = NodesHarness(tmp_path, db_url)
    harness.register()
    yield harness
    harness.engine.dispose()


def test_missed_heartbeats_end_jobs_node_fail_and_requeue_them(nh: NodesHarness) -> None:
    ids = [nh.submit() for _ in range(4)]
    nh.tick()
    assert len(nh.active_allocations()) == 4 and nh.on_node("n1") and nh.on_node("n2")
    lost = nh.on_node("n2")
    nh.clock.advance(2.5)
    nh.beat("n1")
    nh.tick()
    assert nh.node_state("n2") == "UP"  # 2.5s silent < 3 x 1s
    nh.clock.advance(1.0)
    nh.beat("n1")
    nh.tick()
    assert nh.node_state("n2") == "DOWN"
    for j in lost:
        states = [s for s, _ in nh.events(j)]
        i = states.index("NODE_FAIL")
        assert states[i - 1:i + 2] == ["STOPPING", "NODE_FAIL", "PENDING"], states
        assert states.count("NODE_FAIL") == 1
        assert nh.job(j).requeue_count == 1
    # nothing new goes to the DOWN node, though its slices are free
    for _ in range(3):
        nh.beat("n1")
        nh.tick(advance=0.5)
    assert nh.on_node("n2") == []
    assert set(nh.on_node("n1")) <= set(ids)
    # the agent comes back: UP, and the waiting jobs are placed there
    nh.beat("n1", "n2")
    nh.tick()
    assert nh.node_state("n2") == "UP"
    assert {j for j, _ in nh.active_allocations()} == set(ids)


def test_interactive_job_on_a_lost_node_is_not_requeued(nh: NodesHarness) -> None:
    with nh.sessions.begin() as s:
        nodes.set_state(s, nodes.get(s, "n1"), nodes.DRAINED, "test")  # type: ignore[arg-type]
    j = nh.submit(interactive=True, script=None)
    nh.tick()
    assert nh.on_node("n2") == [j]
    nh.clock.advance(5)
    nh.beat("n1")
    nh.tick()
    assert nh.job(j).state == "NODE_FAIL"


def test_drained_node_gets_nothing_and_keeps_its_jobs(nh: NodesHarness) -> None:
    first = nh.submit()
    nh.tick()
    node = "n1" if nh.on_node("n1") else "n2"
    other = "n2" if node == "n1" else "n1"
    with nh.sessions.begin() as s:
        nodes.set_state(s, nodes.get(s, node), nodes.DRAINED, "maintenance")  # type: ignore[arg-type]
    more = [nh.submit() for _ in range(4)]
    nh.beat("n1", "n2")
    nh.tick()
    assert nh.on_node(node) == [first]  # still running there
    assert sorted(nh.on_node(other)) == sorted(more[:3])
    assert nh.job(more[3]).state == "PENDING"
    nh.beat("n1", "n2")  # a heartbeat does not undrain
    assert nh.node_state(node) == "DRAINED"


def test_a_drained_node_that_goes_silent_stays_drained_and_its_jobs_end(nh: NodesHarness) -> None:
    first = nh.submit()
    nh.tick()
    node = "n1" if nh.on_node("n1") else "n2"
    other = "n2" if node == "n1" else "n1"
    with nh.sessions.begin() as s:
        nodes.set_state(s, nodes.get(s, node), nodes.DRAINED, "maintenance")  # type: ignore[arg-type]
    nh.clock.advance(5)  # the drained node misses its heartbeats
    nh.beat(other)
    nh.tick()
    assert nh.node_state(node) == "DRAINED"  # not DOWN: a later heartbeat must not end the drain
    assert "NODE_FAIL" in [s for s, _ in nh.events(first)]
    nh.beat("n1", "n2")
    nh.tick()
    assert nh.node_state(node) == "DRAINED" and nh.on_node(node) == []


def test_an_exit_reported_twice_is_recorded_once(nh: NodesHarness) -> None:
    kw: dict[str, Any] = dict(node="n1", job_id=7, ref="n1/abc", exit_code=0, oom=False, finished_at=T0,
                              cpu_s=1.0, max_rss_bytes=None, error="", now=T0)
    with nh.sessions.begin() as s:
        assert nodes.record_exit(s, **kw) is True
    with nh.sessions.begin() as s:
        assert nodes.record_exit(s, **kw) is False
        assert [r.job_id for r in nodes.exits_after(s, 0)] == [7]


def test_a_command_is_acknowledged_once(nh: NodesHarness) -> None:
    with nh.sessions.begin() as s:
        cid = nodes.add_command(s, "n1", 1, "stop", {"container": "x"}, T0)
    with nh.sessions.begin() as s:
        assert nodes.finish_command(s, cid, True, {}, T0) is True
    with nh.sessions.begin() as s:
        assert nodes.finish_command(s, cid, False, {"error": "late copy"}, T0) is False


def test_scheduler_treats_unavailable_nodes_as_drained() -> None:
    a = SliceInfo("MIG-a", "GPU-a", "2g.10gb", 2, 7, 10240, node="n1")
    b = SliceInfo("MIG-b", "GPU-b", "2g.10gb", 2, 7, 10240, node="n2")
    snap = Snapshot(now=0.0, slices=(a, b), pending=(), running=(), groups={}, unavailable_nodes=frozenset({"n2"}))
    out = without_unavailable_nodes(snap)
    assert [s.drained for s in out.slices] == [False, True]
    assert without_unavailable_nodes(Snapshot(now=0.0, slices=(a, b), pending=(), running=(), groups={})).slices == (a, b)


def test_scheduler_puts_cpu_only_jobs_on_the_least_loaded_node() -> None:
    from ds01q.scheduler.cycle import schedule
    from ds01q.types import Reason, RequestKind, ResourceRequest
    from tests.builders import make_job, make_running, make_snapshot

    cpu = ResourceRequest(kind=RequestKind.NONE, count=0)
    running = [make_running(90 + i, (), user=f"u{i}", node="n1") for i in range(2)]
    jobs = [make_job(i, user=f"v{i}", request=cpu) for i in range(1, 5)]
    placed = schedule(make_snapshot((), jobs, running, nodes=("n1", "n2"))).placements
    # n1 runs two jobs: n2 gets the first two, then they alternate
    assert [(p.job_id, p.node) for p in placed] == [(1, "n2"), (2, "n2"), (3, "n1"), (4, "n2")]
    none_up = schedule(make_snapshot((), jobs[:1], running, nodes=()))
    assert none_up.placements == () and none_up.pending[1].reason == Reason.RESOURCES
    assert "no node is up" in none_up.pending[1].detail
    one_server = schedule(make_snapshot((), jobs[:1]))  # no nodes: the server's own node (None here)
    assert [(p.job_id, p.node) for p in one_server.placements] == [(1, None)]


def test_cpu_only_job_runs_on_an_up_node_and_records_it(nh: NodesHarness) -> None:
    with nh.sessions.begin() as s:
        nodes.set_state(s, nodes.get(s, "n1"), nodes.DRAINED, "test")  # type: ignore[arg-type]
    j = nh.submit(gpus=0)
    nh.tick()
    job = nh.job(j)
    assert job.node == "n2" and job.state in ("STARTING", "RUNNING"), (job.node, job.state)
    with nh.sessions.begin() as s:
        nodes.set_state(s, nodes.get(s, "n2"), nodes.DOWN, "test")  # type: ignore[arg-type]
    k = nh.submit(gpus=0)
    nh.tick()
    assert nh.job(k).state == "PENDING" and nh.job(k).node is None
    assert "no node is up" in (nh.job(k).reason_detail or "")


# ----------------------------------------------------------------- the agent's side, with a FakeExecutor
def agent_for(nh: NodesHarness, node: str = "n1") -> Any:
    from ds01q.daemon.agent import Agent
    from ds01q.executors.fake import FakeExecutor

    return Agent(nh.settings.current, node, nh.sessions, FakeExecutor(clock=nh.clock), clock=nh.clock)


def starting_on(nh: NodesHarness, node: str) -> int:
    from ds01q.db import jobstate, store

    j = nh.submit()
    with nh.sessions.begin() as s:
        job = store.get_job(s, j)
        job.node = node
        jobstate.transition(s, job, JobState.STARTING, at=nh.clock.now(), by="test")
    return j


def start_payload(nh: NodesHarness, job_id: int) -> dict[str, Any]:
    from ds01q.dispatch.messages import spec_to_dict
    from ds01q.executors.base import LaunchSpec

    spec = LaunchSpec(job_id=job_id, name="t", user="root", uid=0, gid=0, group="student", image="img",
                      command=["/bin/sh", "/ds01q/job"], workdir=str(nh.tmp_path), env={}, slices=[],
                      mounts=[("/server/spool/1.sh", "/ds01q/job", "ro")])
    return {"spec": spec_to_dict(spec), "files": {"/ds01q/job": "#!/bin/sh\necho hi\n"}}


def command_state(nh: NodesHarness, cmd_id: int) -> tuple[str, dict[str, Any]]:
    import json

    from ds01q.db.models import NodeCommand

    with nh.sessions() as s:
        c = s.get(NodeCommand, cmd_id)
        assert c is not None
        return c.state, json.loads(c.result or "{}")


def test_agent_starts_once_when_a_start_is_delivered_twice(nh: NodesHarness) -> None:
    agent = agent_for(nh)
    j = starting_on(nh, "n1")
    with nh.sessions.begin() as s:
        cid = nodes.add_command(s, "n1", j, "start", start_payload(nh, j), T0)
    assert agent.execute(cid) == "done"
    assert agent.execute(cid) == "skipped"  # the same message again (re-driven): already acknowledged
    with nh.sessions.begin() as s:  # a second command for the same start (server timed out and re-sent)
        cid2 = nodes.add_command(s, "n1", j, "start", start_payload(nh, j), T0)
    assert agent.execute(cid2) == "done"
    launches = [c for c in agent.executor.calls if c[0] == "launch"]
    assert launches == [("launch", j)]
    assert command_state(nh, cid)[1] == command_state(nh, cid2)[1]  # both name the one container
    spooled = Path(nh.settings.current.executor.state_dir) / "scripts" / f"{j}.sh"
    assert spooled.read_text() == "#!/bin/sh\necho hi\n"  # the script was shipped, not read from the server's disk


def test_agent_refuses_a_start_for_a_job_that_moved_on(nh: NodesHarness) -> None:
    agent = agent_for(nh, "n2")
    j = starting_on(nh, "n1")  # meant for n1
    with nh.sessions.begin() as s:
        cid = nodes.add_command(s, "n2", j, "start", start_payload(nh, j), T0)
    assert agent.execute(cid) == "failed"
    assert "no longer to be started on n2" in command_state(nh, cid)[1]["error"]
    assert agent.executor.calls == []
    with nh.sessions.begin() as s:
        other = nodes.add_command(s, "n1", j, "start", start_payload(nh, j), T0)
    assert agent.execute(other) == "skipped"  # another node's command: not n2's to run


def test_agent_reports_an_exit_once_and_stops_strays(nh: NodesHarness) -> None:
    from ds01q.db import jobstate, store
    from ds01q.dispatch.messages import node_ref

    agent = agent_for(nh)
    j = starting_on(nh, "n1")
    with nh.sessions.begin() as s:
        cid = nodes.add_command(s, "n1", j, "start", start_payload(nh, j), T0)
    agent.execute(cid)
    ref = command_state(nh, cid)[1]["container"]
    with nh.sessions.begin() as s:
        job = store.get_job(s, j)
        job.container = node_ref("n1", ref)
        jobstate.transition(s, job, JobState.RUNNING, at=T0, by="test")
    agent.beat()
    assert agent.report_exits() == 0  # still running
    agent.executor.finish(j, exit_code=3)
    assert agent.report_exits() == 1
    assert agent.report_exits() == 0  # reported again: nothing new
    with nh.sessions() as s:
        rows = nodes.exits_after(s, 0)
        assert [(r.job_id, r.ref, r.exit_code) for r in rows] == [(j, node_ref("n1", ref), 3)]
    # a container whose job ended (or moved to another node) is stopped and removed by the next beat
    j2 = starting_on(nh, "n1")
    with nh.sessions.begin() as s:
        cid = nodes.add_command(s, "n1", j2, "start", start_payload(nh, j2), T0)
    agent.execute(cid)
    with nh.sessions.begin() as s:
        job = store.get_job(s, j2)
        jobstate.transition(s, job, JobState.PENDING, at=T0, by="test", reason="requeued elsewhere")
    agent.beat()
    assert ("stop", j2) in agent.executor.calls and ("remove", j2) in agent.executor.calls


# ----------------------------------------------------------------- the agent's sessions, without Redis
def test_agent_reads_output_as_the_jobs_user_never_through_links_or_foreign_files() -> None:
    """``logs`` of a job on a node: the agent's child becomes the job's user and applies the local checks."""
    import os
    import shutil
    import tempfile

    from ds01q.daemon.agent_sessions import read_as_user
    from ds01q.errors import RequestError
    from tests.support import ensure_user

    me, other = ensure_user("ds01q-stu1"), ensure_user("ds01q-stu2")
    root = tempfile.mkdtemp(prefix="ds01q-read-", dir="/tmp")
    try:
        os.chmod(root, 0o755)
        work = os.path.join(root, "w")
        os.mkdir(work)
        os.chown(work, me.pw_uid, me.pw_gid)

        def put(name: str, text: str, owner: Any = me) -> str:
            path = os.path.join(work, name)
            with open(path, "w") as f:
                f.write(text)
            os.chown(path, owner.pw_uid, owner.pw_gid)
            return path

        def read(path: str, offset: int = 0, limit: int = 100, wd: str = work) -> bytes:
            return read_as_user(7, wd, path, me.pw_uid, me.pw_gid, offset, limit)

        assert read(put("out.txt", "hello world\n")) == b"hello world\n"
        assert read(os.path.join(work, "out.txt"), 6, 5) == b"world"
        assert read(os.path.join(work, "missing.txt")) == b""  # not written yet
        os.symlink("/etc/shadow", os.path.join(work, "link.txt"))
        with pytest.raises(RequestError, match="symbolic link"):
            read(os.path.join(work, "link.txt"))
        with pytest.raises(RequestError, match="not read"):
            read(put("theirs.txt", "secret\n", owner=other))
        # A directory only another user may enter: root would walk in, the job's user cannot.
        closed = os.path.join(root, "closed")
        os.mkdir(closed, 0o700)
        os.chown(closed, other.pw_uid, other.pw_gid)
        inner = os.path.join(closed, "out.txt")
        with open(inner, "w") as f:
            f.write("not yours\n")
        os.chown(inner, me.pw_uid, me.pw_gid)
        with pytest.raises(RequestError, match="Permission denied"):
            read(inner, wd=closed)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_agent_opens_a_shell_only_as_the_jobs_user_in_its_container(nh: NodesHarness) -> None:
    from ds01q.daemon.agent_sessions import SessionServer
    from ds01q.errors import ExecutorError

    j = nh.submit()
    with nh.sessions.begin() as s:  # test set-up: a job RUNNING on n1 as uid 1234
        from ds01q.db.models import Job

        job = s.get(Job, j)
        assert job is not None
        job.state, job.node, job.container, job.uid, job.gid = "RUNNING", "n1", "n1/abc", 1234, 1234
    srv = SessionServer("n1", nh.sessions, None, None)
    job = srv._job(j)
    ok = {"container": "abc", "cmd": ["/bin/sh"], "user": "1234:1234", "env": {"A": "b"}, "workdir": job.workdir}
    assert srv._check_tty(job, ok) == ("abc", ["/bin/sh"], "1234:1234", {"A": "b"})
    for bad, why in [({"user": "0:0"}, "runs as the job's user only"), ({"user": "0"}, "job's user only"),
                     ({"user": "1234:0"}, "job's user only"), ({"container": "other"}, "not running in that"),
                     ({"workdir": "/"}, "working directory only"), ({"cmd": []}, "non-empty list"),
                     ({"env": {"A": 1}}, "strings to strings")]:
        with pytest.raises(ExecutorError, match=why):
            srv._check_tty(job, {**ok, **bad})
    with pytest.raises(ExecutorError, match="not on node n2"):
        SessionServer("n2", nh.sessions, None, None)._job(j)
