from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support import Daemon, base_config, remove_test_containers


def docker_ok() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if not docker_ok():
        pytest.fail("no Docker engine: run scripts/ci-services.sh first (the README test command does)")
    img = subprocess.run(["docker", "image", "inspect", "ds01q/busybox:test"], capture_output=True)
    if img.returncode != 0:
        pytest.fail("image ds01q/busybox:test is missing: run scripts/ci-services.sh")


@pytest.fixture
def make_daemon(docker_engine: None) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(cls: type[Daemon] = Daemon, **over: Any) -> Daemon:
        root = Path(tempfile.mkdtemp(prefix="ds01q-t-", dir="/tmp"))
        root.chmod(0o755)
        d = cls(root=root, config_path=root / "ds01q.yaml")
        d.write_config(base_config(root, **over))
        d.start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()
        remove_test_containers(d.instance)
    for d in started:
        log = d.log_path.read_text() if d.log_path.exists() else ""
        assert "Traceback" not in log and "double allocation" not in log, log[-4000:]
        shutil.rmtree(d.root, ignore_errors=True)


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon()
