"""The adversarial suite: a real daemon on a real socket, attacked by real Unix users.

Needs the Docker engine and the dynamically linked image ``ds01q/debian:test`` (built from
Debian's packages by scripts/ci-services.sh). Missing either is a failure, never a skip.
"""
from __future__ import annotations

import subprocess
import time
from typing import Any, Callable, Iterator

import pytest

from tests.support import Daemon

DEBIAN_IMAGE = "ds01q/debian:test"
SERVED_WITHIN_S = 1.0


@pytest.fixture(scope="session")
def debian_image(docker_engine: None) -> str:
    img = subprocess.run(["docker", "image", "inspect", DEBIAN_IMAGE], capture_output=True)
    if img.returncode != 0:
        pytest.fail(f"image {DEBIAN_IMAGE} is missing: run scripts/ci-services.sh (it builds it with debootstrap)")
    return DEBIAN_IMAGE


def assert_served(daemon: Daemon, user: str = "ds01q-res1") -> float:
    """Another user's request still gets an answer within a second; returns the seconds it took."""
    t0 = time.monotonic()
    r = daemon.cli(user, "queue", "--json")
    took = time.monotonic() - t0
    assert r.rc == 0, r
    assert took < SERVED_WITHIN_S, f"{user}'s queue took {took:.2f}s after the attack"
    return took


@pytest.fixture
def sec_daemon(make_daemon: Callable[..., Daemon], debian_image: str) -> Iterator[Daemon]:
    """A daemon allowing the Debian image; after the test, another user must still be served in a second."""
    d = make_daemon(executor={"allowed_images": [debian_image]})
    yield d
    if d.proc is not None and d.proc.poll() is None:
        assert_served(d)


@pytest.fixture
def refusing_daemon(make_daemon: Callable[..., Daemon], debian_image: str) -> Iterator[Daemon]:
    """``sec_daemon`` for launches that are refused: a failed launch is tried again after 0.5 s x 2^tries
    (5 s in production), so the three refusals that end the job FAILED take seconds, not half a minute."""
    d = make_daemon(executor={"allowed_images": [debian_image], "launch_backoff": "0.5s"})
    yield d
    if d.proc is not None and d.proc.poll() is None:
        assert_served(d)


@pytest.fixture
def make_sec_daemon(make_daemon: Callable[..., Daemon], debian_image: str) -> Callable[..., Daemon]:
    def make(**over: Any) -> Daemon:
        ex = {"allowed_images": [debian_image], **over.pop("executor", {})}
        return make_daemon(executor=ex, **over)
    return make
