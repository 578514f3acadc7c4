"""What travels between the server and an agent: the RQ queue of a node, the function the
agent runs for a command, a LaunchSpec as JSON, and a container reference ``node/id``."""
from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from ds01q.errors import ConfigError
from ds01q.executors.base import LaunchSpec

QUEUE_PREFIX = "ds01q:node:"
AGENT_FUNCTION = "ds01q.daemon.agent.run_command"  # what the agent's RQ worker executes: run_command(cmd_id)
COMMAND_KINDS = ("start", "stop", "signal", "exec", "remove")
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_node_name(name: str) -> str:
    if not isinstance(name, str) or not NODE_NAME.match(name):
        raise ConfigError(f"node name {name!r} is not allowed (letters, digits, '.', '_', '-'; at most 63; "
                          "starting with a letter or digit)")
    return name


def queue_name(node: str) -> str:
    return QUEUE_PREFIX + check_node_name(node)


def node_ref(node: str, container: str) -> str:
    """The reference the server stores in ``jobs.container`` for a container on ``node``."""
    return f"{node}/{container}"


def split_ref(ref: str) -> tuple[str, str]:
    node, sep, container = ref.partition("/")
    if not sep or not node or not container:
        raise ValueError(f"{ref!r} is not a node/container reference")
    return node, container


def spec_to_dict(spec: LaunchSpec) -> dict[str, Any]:
    return asdict(spec)


def spec_from_dict(d: dict[str, Any]) -> LaunchSpec:
    d = dict(d)
    d["mounts"] = [tuple(m) for m in d.get("mounts") or []]
    d["command"] = list(d["command"])
    d["slices"] = list(d["slices"])
    return LaunchSpec(**d)
