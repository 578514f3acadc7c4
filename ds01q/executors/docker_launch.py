"""How DockerExecutor creates and starts a job's container (a part of ``DockerExecutor``, docker.py).

The container of an attempt is named ``<name_prefix>-<job_id>-<attempt>`` and created on the working
directory that was checked and held (heldmount.py), then started. No lookup first: a name already
taken (a relaunch after a crash, or a concurrent launch) is found by the engine's 409, and that
container is adopted if it ever started, or made again if not. A launch that fails before its start
leaves nothing behind (the container, its staging mount, its cgroup).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import docker
import docker.errors
from docker.models.containers import _create_container_args

from ds01q.errors import ExecutorError
from ds01q.executors import cgroups
from ds01q.executors.base import Handle, LaunchSpec, Usage, create_output_file, error_file, job_environment
from ds01q.executors.docker_api import (
    DEFAULT_CGROUPFS_PARENT,
    LABEL_ATTEMPT,
    LABEL_CGROUP,
    LABEL_JOB,
    api_error,
    container_labels,
    create_kwargs,
    engine_errors,
    job_command,
)
from ds01q.executors.docker_exits import EventExits
from ds01q.executors.docker_net import apply_network, missing_network
from ds01q.executors.heldmount import HeldDir, check_output

log = logging.getLogger("ds01q.executors.docker")


class Creating:
    """Creates, starts, adopts and discards containers (a part of ``DockerExecutor``)."""

    client: Any
    _driver: str
    job_cgroups: bool
    instance: str | None
    init: bool
    network: str
    _networks: set[str]
    _held_root: str
    _lock: threading.Lock
    _last: dict[int, Usage]
    _known: dict[int, tuple[str, int, str | None]]
    _exits: EventExits

    name_prefix: str

    def container_name(self, job_id: int, attempt: int = 0) -> str:
        return f"{self.name_prefix}-{job_id}-{attempt}"

    def _cgroups(self, spec: LaunchSpec) -> tuple[str | None, str | None]:
        """(cgroup_parent for Docker, the job's own persistent cgroup path or None)."""
        parent = cgroups.normalize_parent(self._driver, spec.cgroup_parent) if spec.cgroup_parent else None
        if not self.job_cgroups:
            return parent, None
        job_cg = f"{(parent or DEFAULT_CGROUPFS_PARENT).rstrip('/')}/{self.container_name(spec.job_id, spec.attempt)}"
        return job_cg, job_cg

    # ---------------------------------------------------------------- launch

    def _create_kwargs(self, spec: LaunchSpec) -> dict[str, Any]:
        if not os.path.isabs(spec.workdir) or not os.path.isdir(spec.workdir):
            raise ExecutorError(f"working directory {spec.workdir} does not exist")
        env = job_environment(spec)
        command = job_command(spec, env)
        parent, job_cg = self._cgroups(spec)
        labels = container_labels(spec, job_cg, self.instance)
        return create_kwargs(spec, command, env, name=self.container_name(spec.job_id, spec.attempt), labels=labels,
                             cgroup_parent=parent, init=self.init)

    @engine_errors
    def launch(self, spec: LaunchSpec) -> Handle:
        kwargs = self._create_kwargs(spec)
        job_cg = kwargs["labels"].get(LABEL_CGROUP)
        apply_network(self.client, self.network, spec.uid, spec.user, kwargs, self._networks)
        made = self._create_held(spec, kwargs, job_cg)
        if isinstance(made, Handle):
            return made  # this attempt already ran or runs: adopted, never run twice, its output left alone
        cid, held = made
        try:
            for path in (spec.output_path, error_file(spec)) if not spec.interactive else ():
                if path:  # created as the user, checked to be the user's own regular file, then emptied
                    create_output_file(path, spec.uid, spec.gid)
                    if spec.uid != 0:
                        check_output(spec.workdir, path, spec.uid)
                    if spec.truncate:
                        create_output_file(path, spec.uid, spec.gid, truncate=True)
            if job_cg and not cgroups.cgroup_pids(job_cg):  # a stale one of this name: runc makes it anew
                cgroups.drop_cgroup(job_cg)
        except Exception:  # an output file refused: the container, never started, goes
            self._discard(cid, held, job_cg, spec.job_id)
            raise
        try:
            self.client.api.start(cid)
            self._exits.started(cid, time.time())
            # the main process's pid serves sampling only where the job has no cgroup of its own
            pid = 0 if job_cg else int(self.client.api.inspect_container(cid).get("State", {}).get("Pid") or 0)
        except docker.errors.DockerException as e:  # the engine refused the start (an answer lost is not this:
            # that container may run, and the caller looks for it before it forgets the launch)
            self._discard(cid, held, job_cg, spec.job_id)
            raise ExecutorError(f"cannot start container for job {spec.job_id}: {api_error(e)}") from None
        except BaseException:  # the answer lost: the container is left to the caller; the staging point goes (a
            held.release()  # start the engine carries out has made its own mount, or fails for want of one)
            raise
        held.release()
        with self._lock:
            self._last.pop(spec.job_id, None)
            self._known[spec.job_id] = (cid, pid, job_cg)
        return Handle(spec.job_id, cid)

    def _discard(self, cid: str, held: HeldDir, job_cg: str | None, job_id: int) -> None:
        """A launch that failed before its container started: nothing of it is left behind."""
        held.release()
        try:
            self._force_remove(cid)
        except ExecutorError as cleanup:
            log.warning("job %s: %s", job_id, cleanup)
        if job_cg:
            cgroups.drop_cgroup(job_cg)

    def _create_held(self, spec: LaunchSpec, kwargs: dict[str, Any], job_cg: str | None) -> tuple[str, HeldDir] | Handle:
        """Create this attempt's container on the checked working directory, held (mounted) until the start.
        No lookup first: a name already taken (a relaunch after a crash, or a concurrent launch) is found
        by the engine's 409, and that container is adopted if it ever started, or made again if not (its
        mount is stale)."""
        for _ in range(2):
            # mount the directory checked, not a path; staged under this instance's own root, as job ids
            # repeat across daemons on one host (and one daemon's drop of another's staging point unmounts it)
            held = HeldDir(spec.workdir, spec.uid, spec.job_id, root=self._held_root)
            kwargs["mounts"][0]["Source"] = held.source
            try:
                return self._create_in_network(spec, kwargs), held
            except ExecutorError:
                held.release()
                raise
            except docker.errors.ImageNotFound:
                held.release()
                raise ExecutorError(f"image '{spec.image}' is not on this node") from None
            except docker.errors.APIError as e:
                held.release()
                if e.status_code != 409:
                    raise ExecutorError(f"cannot create container for job {spec.job_id}: {api_error(e)}") from None
            except docker.errors.DockerException as e:
                held.release()
                raise ExecutorError(f"cannot create container for job {spec.job_id}: {api_error(e)}") from None
            except BaseException:  # the answer lost (the engine may have made it: the next attempt's name differs)
                held.release()
                raise
            container = self._existing(spec)  # 409: the name is taken
            if container is None:
                continue  # removed meanwhile
            if container.attrs.get("State", {}).get("Status") != "created":
                return self._adopted(spec, container, job_cg)
            self._force_remove(container.id)  # created but never started (a crash in between)
        raise ExecutorError(f"cannot create container for job {spec.job_id}: the name "
                            f"{self.container_name(spec.job_id, spec.attempt)} stays taken")

    def _create_in_network(self, spec: LaunchSpec, kwargs: dict[str, Any]) -> str:
        try:
            return self._create(kwargs)
        except docker.errors.NotFound as e:
            if isinstance(e, docker.errors.ImageNotFound) or not missing_network(e, kwargs):
                raise
            self._networks.discard(kwargs["network"])  # removed since it was cached: make it again, once
            apply_network(self.client, self.network, spec.uid, spec.user, kwargs, self._networks)
            return self._create(kwargs)

    def _create(self, kwargs: dict[str, Any]) -> str:
        """``containers.create`` without its inspect of the new container: the id is all a launch needs."""
        args = dict(kwargs, version=self.client.api._version)
        created: dict[str, Any] = self.client.api.create_container(**_create_container_args(args))
        return str(created["Id"])

    def _existing(self, spec: LaunchSpec) -> Any:
        """The container already named for this (job, attempt), or None. Refuses a stranger's."""
        name = self.container_name(spec.job_id, spec.attempt)
        try:
            old = self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as e:
            raise ExecutorError(f"cannot reach the Docker engine: {api_error(e)}") from None
        labels = old.labels or {}
        if labels.get(LABEL_JOB) != str(spec.job_id) or labels.get(LABEL_ATTEMPT) != str(spec.attempt):
            raise ExecutorError(f"container {name} exists but is not job {spec.job_id}'s; job not started")
        return old

    def _adopted(self, spec: LaunchSpec, container: Any, job_cg: str | None) -> Handle:
        log.info("job %s attempt %s: container %s exists, adopted", spec.job_id, spec.attempt, container.id[:12])
        with self._lock:
            self._known[spec.job_id] = (container.id, int(container.attrs.get("State", {}).get("Pid") or 0), job_cg)
        return Handle(spec.job_id, container.id)

    def _force_remove(self, ref: str) -> None:
        try:
            self.client.api.remove_container(ref, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: removal already in progress
                raise ExecutorError(f"cannot remove container {ref[:12]}: {api_error(e)}") from None

