"""The multi-node fixtures: PostgreSQL and Redis in testcontainers, started once for the whole
directory, and a fresh cluster (a server and agents n1, n2) for each test."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.multinode.cluster import Cluster, Services

BIG = {"researcher": {"priority": 20, "max_gpus": 20.0, "max_running_jobs": 40, "max_runtime": "1h"}}


@pytest.fixture(scope="session")
def services(docker_engine: None) -> Iterator[Services]:
    for image in ("ds01q/redis:test", "ds01q/postgres:test"):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
            pytest.fail(f"image {image} is missing: run scripts/ci-services.sh --all")
    s = Services()
    try:
        s.start()
        yield s
    finally:  # also when a container never became ready: nothing is left running
        s.stop()


@pytest.fixture
def cluster(services: Services) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="ds01q-mn-", dir="/tmp"))
    root.chmod(0o755)
    c = Cluster(root, services, {"n1": 2, "n2": 2}, groups=BIG)
    try:
        c.start()
        c.wait_nodes({"n1": "UP", "n2": "UP"}, timeout=60)
        yield c
    finally:
        c.stop()
        logs = c.logs()
        shutil.rmtree(root, ignore_errors=True)
    assert "Traceback" not in logs and "double allocation" not in logs, logs[-4000:]
