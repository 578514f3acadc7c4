"""Finding 10: the exporter shows no usernames unless configured, and a squatted port stops the
daemon from starting (one line) instead of leaving forged metrics unnoticed."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from ds01q.config import from_dict
from ds01q.daemon.metrics import make_registry, pseudonym
from ds01q.db.engine import make_engine, make_sessionmaker, upgrade
from ds01q.db.models import Allocation, Job
from ds01q.services.context import Context
from tests.support import base_config


def _ctx(tmp_path, show: bool) -> Context:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    db = make_sessionmaker(make_engine(url))
    with db.begin() as s:
        job = Job(name="j", user="alice", uid=1000, gid=1000, group="student", state="RUNNING", request="{}",
                  time_limit_s=60.0, image="x", workdir="/tmp", submitted_at=0.0, args="[]", env="{}")
        s.add(job)
        s.flush()
        s.add(Allocation(job_id=job.id, slice_uuid="GPU-1", profile="full", gpu_uuid="GPU-1", gpu_equiv=1.0,
                         memory_mb=1, allocated_at=0.0))
    return Context.of(from_dict({"security": {"metrics_show_users": show}}), db)


def _labels(ctx: Context) -> str:
    from prometheus_client import generate_latest
    return generate_latest(make_registry(ctx)).decode()


def test_usernames_are_pseudonyms_unless_configured(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a").mkdir()
    hidden = _labels(_ctx(tmp_path / "a", show=False))
    assert "alice" not in hidden and f'user="{pseudonym("alice")}"' in hidden
    (tmp_path / "b").mkdir()
    assert 'user="alice"' in _labels(_ctx(tmp_path / "b", show=True))


def test_a_squatted_metrics_port_stops_the_daemon_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    squat = socket.socket()
    squat.bind(("127.0.0.1", 0))
    squat.listen()
    port = squat.getsockname()[1]
    cfg = tmp_path / "c.yaml"
    import yaml
    c = base_config(tmp_path)
    c["executor"] = {**c["executor"], "kind": "process"}
    cfg.write_text(yaml.safe_dump(c))
    try:
        r = subprocess.run([sys.executable, "-m", "ds01q.cli.main", "--config", str(cfg), "server",
                            "--metrics-port", str(port)], capture_output=True, text=True, timeout=60)
    finally:
        squat.close()
    assert r.returncode != 0
    assert f"metrics port 127.0.0.1:{port} cannot be bound" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "ds01q.sock").exists()


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
