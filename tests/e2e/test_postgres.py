"""The whole daemon on PostgreSQL (database: postgresql://…), against the real engine."""
from __future__ import annotations

from typing import Callable

from tests.dbs import postgres_url
from tests.support import Daemon

OOM_BODY = "x=$(head -c 200000000 /dev/zero | tr '\\0' 'x')\necho survived ${#x}\n"


def test_out_of_memory_on_postgresql_keeps_its_full_reason(make_daemon: Callable[..., Daemon]) -> None:
    """Once a 38-character reason overflowed VARCHAR(32) there: every tick failed and the job stayed RUNNING."""
    daemon = make_daemon(database=postgres_url())
    oom = daemon.submit("ds01q-stu1", OOM_BODY, "--mem", "32m")
    ok = daemon.submit("ds01q-stu1", "echo fine\n")
    job = daemon.wait_state(oom, {"OUT_OF_MEMORY", "FAILED", "COMPLETED"}, timeout=60)
    assert job["state"] == "OUT_OF_MEMORY", job
    assert job["reason"] == "out of memory (container memory limit)" == job["end_reason"]
    assert daemon.wait_state(ok, {"COMPLETED", "FAILED"}, timeout=60)["state"] == "COMPLETED"
    assert "tick failed" not in daemon.log_path.read_text()
