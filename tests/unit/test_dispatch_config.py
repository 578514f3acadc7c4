"""The `dispatch` config section and the names and references agents and the server share."""
from __future__ import annotations

import pytest

from ds01q.config import from_dict
from ds01q.dispatch.messages import check_node_name, node_ref, queue_name, spec_from_dict, spec_to_dict, split_ref
from ds01q.errors import ConfigError
from ds01q.executors.base import LaunchSpec


def test_default_is_local_and_needs_no_redis() -> None:
    d = from_dict({}).dispatch
    assert (d.kind, d.redis, d.down_after_s) == ("local", None, 15.0)


def test_rq_with_heartbeats() -> None:
    d = from_dict({"dispatch": {"kind": "rq", "redis": "redis://10.0.0.1:6379/0", "heartbeat": "2s",
                                "missed_heartbeats": 4, "redrive": "3s", "command_timeout": "1m"}}).dispatch
    assert (d.kind, d.heartbeat_s, d.missed_heartbeats, d.down_after_s, d.redrive_s, d.command_timeout_s) == \
        ("rq", 2.0, 4, 8.0, 3.0, 60.0)


@pytest.mark.parametrize("section, message", [
    ({"kind": "celery"}, "dispatch.kind: 'celery' is not allowed (allowed: local, rq)"),
    ({"kind": "rq"}, "dispatch.redis: None is not a Redis URL"),
    ({"kind": "rq", "redis": "http://x"}, "dispatch.redis: 'http://x' is not a Redis URL"),
    ({"kind": "rq", "redis": "redis://h", "missed_heartbeats": 0}, "dispatch.missed_heartbeats: 0 must be >= 1"),
    ({"kind": "rq", "redis": "redis://h", "missed_heartbeats": "3"}, "dispatch.missed_heartbeats: '3' is not a int"),
    ({"kind": "rq", "redis": "redis://h", "heartbeat": "soon"}, "dispatch.heartbeat: 'soon' is not a duration"),
    ({"redis_url": "x"}, "dispatch.redis_url: unknown key"),
])
def test_bad_dispatch_is_one_line_naming_the_key(section: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_dict({"dispatch": section})
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["", "-n1", "n 1", "n1/x", "n1;rm", "a" * 64, "ü"])
def test_hostile_node_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="is not allowed"):
        queue_name(name)


def test_names_and_references() -> None:
    assert check_node_name("gpu-07.lab_a") == "gpu-07.lab_a"
    assert queue_name("n1") == "ds01q:node:n1"
    assert split_ref(node_ref("n1", "abc123")) == ("n1", "abc123")
    with pytest.raises(ValueError):
        split_ref("abc123")


def test_a_launch_spec_survives_the_trip() -> None:
    spec = LaunchSpec(job_id=3, name="t", user="u", uid=1000, gid=1000, group="g", image="img", command=["a", "b"],
                      workdir="/w", env={"K": "V"}, slices=["MIG-1"], mounts=[("/h", "/c", "ro")], cpus=2.0)
    assert spec_from_dict(spec_to_dict(spec)) == spec
