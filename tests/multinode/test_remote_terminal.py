"""Shells and ``logs -f`` of jobs on another node, relayed by its agent over Redis streams; the
remote container under the user's cgroup slice; a CPU-only job placed on a node. n1 is drained
so that every job lands on n2. Real pty, real users, real Docker engine."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ds01q.executors.cgroups import cgroup_parent
from tests.e2e.test_shell import DETACH, Term
from tests.multinode.cluster import Cluster
from tests.support import ensure_user

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]


@pytest.fixture
def terms() -> Iterator[Callable[..., Term]]:
    opened: list[Term] = []

    def make(*a: Any, **kw: Any) -> Term:
        t = Term(*a, **kw)
        opened.append(t)
        return t

    yield make
    for t in opened:
        t.close()


def only_n2(c: Cluster) -> None:
    assert c.server.cli("root", "admin", "drain", "n1", "--reason", "test").rc == 0
    c.wait_nodes({"n1": "DRAINED", "n2": "UP"}, timeout=15)


def container_of(c: Cluster, node: str, job_id: int) -> dict[str, Any]:
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=ds01q.instance={c.instance(node)}",
                          "--filter", f"label=ds01q.job={job_id}"], capture_output=True, text=True).stdout.split()
    assert len(ids) == 1, (ids, c.logs())
    out = subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def test_shell_on_another_node(cluster: Cluster, terms: Callable[..., Term]) -> None:
    c = cluster
    only_n2(c)
    t0 = time.monotonic()
    t = terms(c.server, "ds01q-stu1", "shell", "--mig", "2g.10gb", rows=24, cols=100)
    m = t.expect(r"ds01q: job (\d+) on (MIG-[0-9a-f-]+) \(2g\.10gb\); time left", timeout=60)
    job_id, uuid = int(m.group(1)), m.group(2)
    t.expect(r"detach: Ctrl-P Ctrl-Q")
    t.run("echo READY", r"\r\nREADY")
    opened_s = time.monotonic() - t0
    assert c.server.show(job_id)["node"] == "n2"
    uid = ensure_user("ds01q-stu1").pw_uid
    t.run("echo SIZE=$(stty size)", r"SIZE=24 100")  # the size reached the exec on n2
    t1 = time.monotonic()
    for i in range(10):
        t.run(f"echo R{i}=$((40+{i}))", rf"R{i}={40 + i}")
    echo_ms = (time.monotonic() - t1) * 100
    t.run("echo kept > kept.txt; echo WROTE=$?", r"WROTE=0")
    t.p.send(DETACH)
    t.expect(rf"detached; job {job_id} keeps running")
    assert t.wait() == 0
    a = terms(c.server, "ds01q-stu1", "attach", str(job_id))
    a.expect(r"resumed your detached shell", timeout=30)
    a.run("cat kept.txt", r"\r\nkept")
    a.run("echo $CUDA_VISIBLE_DEVICES; id -u; exit 7", rf"\r\n{uuid}\r\n{uid}\r\n")
    assert a.wait() == 7
    done = c.server.wait_state(job_id, {"FAILED", "COMPLETED", "CANCELLED"}, timeout=60)
    assert (done["state"], done["exit_code"], done["node"]) == ("FAILED", 7, "n2"), done
    assert "shell" in (c.root / "agent-n2.log").read_text()
    print(f"\nFIGURES: remote shell on n2 ready {opened_s:.1f}s after `ds01q shell` (job start included); "
          f"one command echoed back in {echo_ms:.0f} ms on average")


def test_logs_follow_cgroup_parent_and_cpu_job_on_another_node(cluster: Cluster,
                                                               terms: Callable[..., Term]) -> None:
    c = cluster
    only_n2(c)
    user = "ds01q-res1"
    body = "#!/bin/sh\necho first\nwhile [ ! -e go.flag ]; do sleep 0.2; done\necho second\n"
    job_id = c.server.submit(user, body, "--gpus", "0", name="follow.sh")  # CPU only: still on a node
    job = c.server.wait_state(job_id, "RUNNING", timeout=60)
    assert job["node"] == "n2", job

    # the remote container sits under the user's slice, as a local one does
    info = container_of(c, "n2", job_id)
    parent = info["HostConfig"]["CgroupParent"]
    driver = subprocess.run(["docker", "info", "--format", "{{.CgroupDriver}}"], capture_output=True,
                            text=True).stdout.strip()
    want = cgroup_parent(driver, "ds01q", "researcher", user)
    assert parent == want or parent.startswith(want + "/"), (parent, want)

    # logs -f prints what is there, waits for more while the job runs, and ends with the job
    t = terms(c.server, user, "logs", "-f", str(job_id))
    t.expect(r"first\r\n", timeout=30)
    assert c.server.show(job_id)["state"] == "RUNNING"
    flag = c.server.workdir(user) / "go.flag"
    flag.touch()
    t.expect(r"second\r\n", timeout=30)
    assert t.wait(timeout=30) == 0
    assert c.server.show(job_id)["state"] == "COMPLETED"
    agent_log = (c.root / "agent-n2.log").read_text()
    assert f"logs of job {job_id}:" in agent_log  # read on n2, by its agent
    other = c.server.cli("ds01q-stu2", "logs", str(job_id))
    assert other.rc != 0 and f"read the logs of job {job_id}" in other.err, other

    # attack: the user swaps the output for a link to a root-only file; n2's agent refuses it
    out = Path(c.server.show(job_id)["output"])
    out.unlink()
    out.symlink_to("/etc/shadow")
    pw = ensure_user(user)
    os.lchown(out, pw.pw_uid, pw.pw_gid)
    r = c.server.cli(user, "logs", str(job_id))
    assert r.rc != 0 and "symbolic link" in r.err and "root:" not in r.out, r
    assert r.err.count("\n") <= 1, r.err


def test_a_shell_the_server_leaves_is_closed_on_the_agent(cluster: Cluster, terms: Callable[..., Term]) -> None:
    """The server goes away while a remote shell is open: the agent closes the exec's connection."""
    c = cluster
    only_n2(c)
    t = terms(c.server, "ds01q-stu1", "shell", "--mig", "2g.10gb")
    t.expect(r"ds01q: job (\d+) on", timeout=60)
    t.expect(r"detach: Ctrl-P Ctrl-Q")
    t.run("echo READY", r"\r\nREADY")
    c.server.kill()
    log = c.root / "agent-n2.log"
    deadline = time.monotonic() + 40
    while "the server left" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "the server left" in log.read_text(), c.logs()
    c.server.start()
