"""Finding 17: network modes from the config. By default each user's jobs get their own bridge
network: a user's own jobs reach each other, another user's jobs do not, outbound stays NATed."""
from __future__ import annotations

import json
import subprocess

from tests.security.conftest import assert_served
from tests.support import Daemon, ensure_user

SERVER = "#!/bin/sh\nmkdir -p /tmp/www && echo HELLO-FROM-STU1 > /tmp/www/index.html && httpd -f -p 8080 -h /tmp/www\n"


def inspect(ref: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(["docker", "inspect", ref], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def fetch(daemon: Daemon, user: str, ip: str, name: str) -> str:
    script = f"#!/bin/sh\nprintf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 4 {ip} 8080 | grep HELLO || echo FETCH-FAILED\n"
    job = daemon.submit(user, script, name=name)
    daemon.wait_state(job, {"COMPLETED", "FAILED"}, timeout=60)
    return (daemon.workdir(user) / f"ds01q-{job}.out").read_text()


def test_per_user_networks_isolate_users(sec_daemon: Daemon) -> None:
    server = sec_daemon.submit("ds01q-stu1", SERVER, name="srv.sh")
    job = sec_daemon.wait_state(server, "RUNNING")
    attrs = inspect(sec_daemon.containers(server)[0])
    nets = attrs["NetworkSettings"]["Networks"]
    want = f"ds01q-user-{ensure_user('ds01q-stu1').pw_uid}"
    assert list(nets) == [want], nets
    ip = nets[want]["IPAddress"]
    net = json.loads(subprocess.run(["docker", "network", "inspect", want], capture_output=True, text=True,
                                    check=True).stdout)[0]
    assert net["Driver"] == "bridge" and net["Internal"] is False  # outbound NAT as on the default bridge
    assert "HELLO-FROM-STU1" in fetch(sec_daemon, "ds01q-stu1", ip, "own.sh")
    other = fetch(sec_daemon, "ds01q-stu2", ip, "other.sh")
    assert "HELLO-FROM-STU1" not in other and "FETCH-FAILED" in other, other
    assert sec_daemon.cli("ds01q-stu1", "cancel", str(job["id"])).rc == 0
    assert_served(sec_daemon)


def test_network_none(make_sec_daemon) -> None:  # type: ignore[no-untyped-def]
    d: Daemon = make_sec_daemon(executor={"network": "none"})
    job = d.submit("ds01q-stu1", "#!/bin/sh\nsleep 30\n")
    d.wait_state(job, "RUNNING")
    attrs = inspect(d.containers(job)[0])
    assert attrs["HostConfig"]["NetworkMode"] == "none"
