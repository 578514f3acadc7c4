"""Which network a job's container joins (``executor.network``).

- ``per-user`` (default): one bridge network per user, ``ds01q-user-<uid>``, created on first use.
  Docker isolates bridge networks from each other, so one user's jobs cannot reach another user's
  jobs, while outbound traffic (datasets, package installs) is NATed as on the default bridge.
- ``none``: no network at all (loopback only).
- ``bridge``: Docker's shared default bridge (every job can reach every other job).
"""
from __future__ import annotations

import threading
from typing import Any

import docker.errors

from ds01q.errors import ExecutorError
from ds01q.executors.docker_api import api_error

MODES = ("none", "per-user", "bridge")
LABEL_NET_USER = "ds01q.network.user"
_lock = threading.Lock()


def network_name(uid: int) -> str:
    return f"ds01q-user-{uid}"


def ensure_user_network(client: Any, uid: int, user: str, known: set[str] | None = None) -> str:
    """The user's bridge network, created if missing (concurrent launches create it once). A name in
    ``known`` was found or created before and is not looked up again (one engine call less per launch);
    the caller forgets it when a create names a missing network (``forget_network``)."""
    name = network_name(uid)
    if known is not None and name in known:
        return name
    with _lock:
        if known is not None and name in known:  # found by a launch that held the lock before this one
            return name
        try:
            found = client.networks.list(names=[name])
            if not any(n.name == name for n in found):
                client.networks.create(name, driver="bridge", check_duplicate=True,
                                       labels={LABEL_NET_USER: user, "ds01q.uid": str(uid)})
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: another daemon created it first
                raise ExecutorError(f"cannot create network {name}: {api_error(e)}") from None
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot create network {name}: {api_error(e)}") from None
        if known is not None:
            known.add(name)
    return name


def missing_network(e: Exception, kwargs: dict[str, Any]) -> bool:
    """Did a container create fail because its (cached) network is gone (removed by an admin)?"""
    name = kwargs.get("network")
    return (bool(name) and isinstance(e, docker.errors.NotFound)
            and "network" in api_error(e).lower() and str(name) in api_error(e))


def apply_network(client: Any, mode: str, uid: int, user: str, kwargs: dict[str, Any],
                  known: set[str] | None = None) -> None:
    """Set the network of ``containers.create`` ``kwargs`` for ``mode`` (``known``: see ``ensure_user_network``)."""
    if mode not in MODES:
        raise ExecutorError(f"network mode {mode!r} is not allowed (allowed: {', '.join(MODES)})")
    if mode == "none":
        kwargs["network_mode"] = "none"
    elif mode == "per-user":
        kwargs["network"] = ensure_user_network(client, uid, user, known)
    # bridge: Docker's default
