"""Finding 18: a daemon with no ``instance`` adopts only containers labelled as its own."""
from __future__ import annotations

import subprocess

from ds01q.executors.docker import DockerExecutor
from ds01q.executors.docker_api import LABEL_INSTANCE, container_labels
from ds01q.executors.base import LaunchSpec


def _run(*labels: str) -> str:
    args = [a for lab in labels for a in ("--label", lab)]
    return subprocess.run(["docker", "run", "-d", *args, "ds01q/busybox:test", "sleep", "60"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_no_instance_adopts_only_its_own(docker_engine: None) -> None:
    foreign = [_run("ds01q.job=987651"), _run("ds01q.job=987652", f"{LABEL_INSTANCE}=someone-else"),
               _run("ds01q.job=987653", f"{LABEL_INSTANCE}=default")]
    try:
        ex = DockerExecutor(instance=None)
        try:
            seen = ex.running()
        finally:
            ex.close()
        assert 987651 not in seen and 987652 not in seen
        assert 987653 in seen and seen[987653].ref == foreign[2]
    finally:
        subprocess.run(["docker", "rm", "-f", *foreign], capture_output=True)
    spec = LaunchSpec(job_id=1, name="j", user="u", uid=1, gid=1, group="g", image="i", command=["true"],
                      workdir="/tmp", env={}, slices=[])
    assert container_labels(spec, None, None)[LABEL_INSTANCE] == "default"
