"""A container's exit as the engine's events tell it, so that its job ends without an inspect.

The engine answers an inspect of a container that just exited only after its clean-up of that
container (unmounts, the network endpoint): a quarter of a second per job when 8 slices turn over
on 2 cores. The ``die`` event already carries the exit code (``exitCode``) and the time
(``timeNano``), an ``oom`` event comes where the engine would set ``State.OOMKilled``, and the
job's own cgroup (which outlives the container) holds its CPU time, peak memory and OOM kills.
The start time is when the engine's start call returned. A container this executor did not start
itself, or one without a cgroup of its own, is inspected as before.

``EventWatch`` (a part of ``DockerExecutor``) follows the engine's ``die`` and ``oom`` events of this
instance's containers on a thread, reconnecting from the last event's time when the stream breaks
(the engine restarted), and tells ``on_lost`` that it broke.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ds01q.executors import cgroups
from ds01q.executors.base import ExitInfo, Usage, notify_exit, one_line, watch_thread
from ds01q.executors.docker_api import LABEL_JOB, label_filters

__all__ = ["EventExits", "EventWatch", "killed_for_memory"]

log = logging.getLogger("ds01q.executors.docker")

LIMIT = 4096  # entries kept per table; a container removed some other way must not grow them for ever


@dataclass(frozen=True, slots=True)
class _Died:
    exit_code: int
    finished_at: float


def killed_for_memory(flagged: bool, exit_code: int | None, job_cgroup: str | None) -> bool:
    """The engine's OOM flag, or for a SIGKILL (137) an OOM kill counted in the job's own cgroup (the
    engine does not flag a kill by the job cgroup's limit, which sits above the container's)."""
    if flagged or exit_code != 137 or not job_cgroup:
        return flagged
    return (cgroups.read_oom_kills(job_cgroup) or 0) > 0


def _put(table: dict[str, Any], key: str, value: Any) -> None:
    table[key] = value
    while len(table) > LIMIT:
        del table[next(iter(table))]


class EventExits:
    """What the events said about this executor's containers, by container id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}
        self._died: dict[str, _Died] = {}
        self._oom: dict[str, bool] = {}

    def started(self, cid: str, at: float) -> None:
        with self._lock:
            _put(self._started, cid, at)

    def seen(self, event: dict[str, Any]) -> str | None:
        """Note a ``die`` or ``oom`` event; returns its action."""
        cid = str(event.get("id") or (event.get("Actor") or {}).get("ID") or "")
        action = str(event.get("Action") or event.get("status") or "")
        if not cid:
            return action
        if action == "oom":
            with self._lock:
                _put(self._oom, cid, True)
        elif action == "die":
            attrs = (event.get("Actor") or {}).get("Attributes") or {}
            try:
                died = _Died(int(attrs["exitCode"]), int(event["timeNano"]) / 1e9)
            except (KeyError, TypeError, ValueError):  # an engine that does not say: inspected instead
                return action
            with self._lock:
                _put(self._died, cid, died)
        return action

    def exit_info(self, cid: str, job_cgroup: str | None, last: Usage | None) -> ExitInfo | None:
        """The exit of ``cid`` from its events and its cgroup, or None where they do not tell it all."""
        with self._lock:
            died, started, oom = self._died.get(cid), self._started.get(cid), self._oom.get(cid, False)
        if died is None or started is None or not job_cgroup:
            return None
        usage = cgroups.read_cgroup_usage_path(job_cgroup) or last
        return ExitInfo(exit_code=died.exit_code, oom_killed=killed_for_memory(oom, died.exit_code, job_cgroup),
                        finished_at=died.finished_at,
                        cpu_s=usage.cpu_s if usage else None, max_rss_bytes=usage.max_rss_bytes if usage else None,
                        started_at=min(started, died.finished_at))

    def forget(self, cid: str) -> None:
        with self._lock:
            self._started.pop(cid, None)
            self._died.pop(cid, None)
            self._oom.pop(cid, None)


class EventWatch:
    """The event thread of ``DockerExecutor`` (a part of it)."""

    client: Any
    instance: str | None
    _exits: EventExits
    _closed: threading.Event
    _watch_thread: threading.Thread | None
    _watch_stream: Any
    _on_exit: Callable[[int], None] | None
    _on_lost: Callable[[str], None] | None

    def watch(self, on_exit: Callable[[int], None], on_lost: Callable[[str], None] | None = None) -> None:
        self._on_exit, self._on_lost = on_exit, on_lost
        self._watch_thread = watch_thread(self._watch_thread, self._closed, self._watch_loop, "ds01q-docker-events")

    def _watch_loop(self) -> None:
        since: int | None = None
        while not self._closed.is_set():
            try:
                filters = {"type": "container", "event": ["die", "oom"], "label": label_filters(self.instance)}
                stream = self.client.api.events(since=since, filters=filters, decode=True)
                self._watch_stream = stream
                if self._closed.is_set():
                    stream.close()
                    break
                for event in stream:
                    since = int(event.get("time") or time.time())
                    self._dispatch(event)
                lost = "the engine closed the event stream"
            except Exception as e:  # the engine restarted, the socket broke, ...
                lost = one_line(e)
            if not self._closed.is_set():
                log.warning("docker event stream failed, reconnecting: %s", lost)
                if self._on_lost is not None:
                    self._on_lost(lost)
            self._watch_stream = None
            self._closed.wait(1.0)

    def _dispatch(self, event: dict[str, Any]) -> None:
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        try:
            job_id = int(attrs.get(LABEL_JOB, ""))
        except ValueError:
            return
        if self._exits.seen(event) == "die":
            notify_exit(self._on_exit, job_id)
