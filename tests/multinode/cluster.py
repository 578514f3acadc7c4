"""A multi-node cluster on this machine for tests and bench: PostgreSQL and Redis in
testcontainers (images ds01q/postgres:test and ds01q/redis:test, built locally by
scripts/ci-services.sh), one `ds01q server` and one `ds01q agent` per node, all real processes
against the real Docker engine. Every port is bound to 127.0.0.1."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # the reaper image is in a registry: not here
# Published ports on loopback, reached on loopback (also when these tests run inside a container).
os.environ.setdefault("TC_HOST", "127.0.0.1")
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")

import yaml  # noqa: E402

from tests.support import REPO, Daemon, base_config, remove_test_containers  # noqa: E402

REDIS_IMAGE = "ds01q/redis:test"
POSTGRES_IMAGE = "ds01q/postgres:test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_subnet() -> str:
    """A 10.x.y.0/24 that no route of this host and no Docker network overlaps."""
    import ipaddress
    import random

    import docker

    used = [ipaddress.ip_network(line.split()[0], strict=False) for line in subprocess.run(
        ["ip", "-o", "-4", "route", "show"], capture_output=True, text=True).stdout.splitlines()
        if line and line.split()[0][0].isdigit()]
    for net in docker.from_env().networks.list():
        for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet") and ":" not in cfg["Subnet"]:
                used.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
    candidates = [ipaddress.ip_network(f"10.{a}.{b}.0/24") for a in range(200, 250) for b in range(256)]
    random.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise RuntimeError("no free 10.x.y.0/24 for the test services' network")


def node_inventory(node: str, gpus: int = 2) -> list[dict[str, Any]]:
    """``gpus`` A100s, each cut in three 2g.10gb slices, with UUIDs unique to ``node``."""
    tag = "".join(f"{ord(c):02x}" for c in node)[-8:].rjust(8, "0")
    out = []
    for g in range(gpus):
        out.append({"uuid": f"GPU-{tag}-0000-0000-0000-{g:012d}", "name": "NVIDIA A100-PCIE-40GB",
                    "mig": [{"uuid": f"MIG-{tag}-0000-0000-{g:04d}-{i:012d}", "profile": "2g.10gb"}
                            for i in range(3)]})
    return out


class Services:
    """Redis and PostgreSQL in testcontainers, Redis on a fixed loopback port so it can restart."""

    def __init__(self) -> None:
        from testcontainers.core.network import Network
        from testcontainers.community.postgres import PostgresContainer
        from testcontainers.community.redis import RedisContainer

        # A network of their own, on a /24 no interface of this host uses: the default bridge may
        # share its subnet with a stale interface (a leftover bridge that routes 172.17/16 away
        # from docker0), and leftover bridges can use up Docker's default pools.
        from docker.types import IPAMConfig, IPAMPool

        self.network = Network(docker_network_kw={"ipam": IPAMConfig(pool_configs=[IPAMPool(subnet=free_subnet())])})
        self.redis_port = free_port()
        self.redis = RedisContainer(REDIS_IMAGE, network=self.network)
        self.postgres = PostgresContainer(POSTGRES_IMAGE, username="ds01q", password="ds01q", dbname="ds01q",
                                          driver="psycopg2", network=self.network)
        # docker-py's (address, port) form: published on loopback only
        self.redis.ports["6379"] = ("127.0.0.1", self.redis_port)  # type: ignore[assignment]
        self.postgres.ports["5432"] = ("127.0.0.1", free_port())  # type: ignore[assignment]

    def start(self) -> Services:
        self.network.create()
        self.redis.start()
        self.postgres.start()
        return self

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def database_url(self) -> str:
        return self.postgres.get_connection_url(host="127.0.0.1")

    def fresh_database(self) -> str:
        """A new, empty database in the PostgreSQL container: each cluster starts from nothing."""
        import psycopg2

        self.databases = getattr(self, "databases", 0) + 1
        name = f"ds01q_{self.databases}"
        conn = psycopg2.connect(self.database_url.replace("postgresql+psycopg2://", "postgresql://"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name}")
                cur.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()
        return self.database_url.rsplit("/", 1)[0] + "/" + name

    def restart_redis(self) -> None:
        self.redis.get_wrapped_container().restart(timeout=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.redis.get_client().ping():
                    return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError("Redis did not come back")

    def stop(self) -> None:
        for c in (self.redis, self.postgres, self.network):
            try:
                c.stop() if hasattr(c, "stop") else c.remove()
            except Exception:
                pass


class Cluster:
    """A server (``Daemon``) and agents, sharing one PostgreSQL database and one Redis."""

    def __init__(self, root: Path, services: Services, nodes: dict[str, int], **over: Any) -> None:
        self.root = root
        self.services = services
        self.dispatch = {"kind": "rq", "redis": services.redis_url, "heartbeat": "1s", "missed_heartbeats": 4,
                         "redrive": "2s", "command_timeout": "60s"}
        cfg = base_config(root, database=services.fresh_database(), dispatch=self.dispatch,
                          inventory={"source": "static", "gpus": []}, **over)
        self.server = Daemon(root=root, config_path=root / "ds01q.yaml")
        self.server.write_config(cfg)
        self.base = cfg
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.node_gpus = nodes

    def instance(self, node: str) -> str:
        return f"{self.root.name.replace('_', '-')}-{node}"

    def agent_config(self, node: str) -> Path:
        cfg = dict(self.base)
        cfg["executor"] = {**cfg["executor"], "instance": self.instance(node),
                           "state_dir": str(self.root / f"state-{node}")}
        cfg["inventory"] = {"source": "static", "gpus": node_inventory(node, self.node_gpus[node])}
        path = self.root / f"agent-{node}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def start_agent(self, node: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = open(self.root / f"agent-{node}.log", "ab")
        self.agents[node] = subprocess.Popen(
            [sys.executable, "-m", "ds01q.cli.main", "--config", str(self.agent_config(node)), "agent",
             "--node", node, "--log-level", "DEBUG"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))

    def kill_agent(self, node: str, containers_too: bool = True) -> None:
        """The node dies: its agent is killed (SIGKILL) and, with it, its containers."""
        p = self.agents.pop(node)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if containers_too:
            remove_test_containers(self.instance(node))

    def start(self) -> Cluster:
        self.server.start()
        for node in self.node_gpus:
            self.start_agent(node)
        return self

    def nodes(self) -> dict[str, dict[str, Any]]:
        st = self.server.cli_json("root", "status")
        return {n["name"]: n for n in st.get("nodes") or []}

    def wait_nodes(self, want: dict[str, str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.nodes()
            if all(got.get(n, {}).get("state") == s for n, s in want.items()):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes {got} never reached {want}\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        parts = [self.server.log_tail(3000)]
        for node in self.node_gpus:
            p = self.root / f"agent-{node}.log"
            if p.exists():
                parts.append(f"--- agent {node}\n" + p.read_text()[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        for node in list(self.agents):
            p = self.agents.pop(node)
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.server.stop()
        for node in self.node_gpus:
            remove_test_containers(self.instance(node))
