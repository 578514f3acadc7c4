"""Composition root of ``ds01q server``: config → database → executor → controller → socket."""
from __future__ import annotations

import logging
import os

from dataclasses import dataclass

from ds01q.config import Config, ConfigRef, load
from ds01q.controller import Controller
from ds01q.controller.deps import LoopDeps
from ds01q.daemon.relay.attach import RelayEnv
from ds01q.daemon.relay.sessions import Terminals
from ds01q.db.engine import make_engine, make_sessionmaker, upgrade
from ds01q.errors import ExecutorError
from ds01q.executors.base import Executor
from ds01q.services.context import Context
from ds01q.services.mig_recut import release_stale_reservations


def db_upgrade(config_path: str | None) -> str:
    cfg = load(config_path)
    upgrade(cfg.database)
    return cfg.database


def make_executor(cfg: Config) -> tuple[Executor, str | None]:
    """The configured executor and the cgroup driver to place containers under (None: no parent)."""
    if cfg.executor.kind == "process":
        from ds01q.executors.process import ProcessExecutor

        return ProcessExecutor(state_dir=cfg.executor.state_dir), None
    from ds01q.executors.deferred import DeferredExecutor
    from ds01q.executors.docker import DockerExecutor, name_prefix

    inst = cfg.executor.instance

    def docker_executor() -> Executor:
        return DockerExecutor(instance=inst, name_prefix=name_prefix(inst),
                              network=cfg.executor.network)

    driver = cfg.executor.cgroup_driver
    try:
        ex: Executor = docker_executor()
    except ExecutorError as e:  # the engine is down: start anyway, place nothing until it is back
        logging.getLogger("ds01q.daemon").warning("starting without the Docker engine: %s", e)
        return DeferredExecutor(docker_executor, first_error=str(e)), (None if driver == "none" else driver)
    if driver == "auto":
        driver = ex.cgroup_driver()
    return ex, (None if driver == "none" else driver)


@dataclass(frozen=True)
class Daemon:
    """The built daemon: the services' context, the loop, and the terminal relay's needs."""

    ctx: Context
    controller: Controller
    relay: RelayEnv


def build(config_path: str | None) -> Daemon:
    cfg = load(config_path)
    upgrade(cfg.database)
    settings = ConfigRef(cfg)
    sessions = make_sessionmaker(make_engine(cfg.database))
    reader = None  # ``ds01q logs``: read here, or (several nodes) by the job's node
    try:
        if cfg.dispatch.kind == "rq":  # several nodes: every job runs through a node's agent
            from ds01q.dispatch.remote import RemoteExecutor

            executor, driver = RemoteExecutor(sessions, cfg.dispatch.redis or "",
                                              command_timeout_s=cfg.dispatch.command_timeout_s,
                                              redrive_s=cfg.dispatch.redrive_s), None
            # the user's slice as a systemd slice name: each agent's executor turns it into the
            # form its own engine's cgroup driver needs (cgroups.normalize_parent)
            driver = None if cfg.executor.cgroup_driver == "none" else "systemd"
            reader = executor.read_output
        else:
            executor, driver = make_executor(cfg)
    except ExecutorError:
        raise
    except Exception as e:
        raise ExecutorError(f"cannot reach the Docker engine ({type(e).__name__}): start dockerd, "
                            "or set executor.kind: process") from None
    terminals = Terminals()
    controller = Controller(LoopDeps(settings=settings, sessions=sessions, executor=executor,
                                     terminals=terminals.count, cgroup_driver=driver))
    ctx = Context(settings=settings, sessions=sessions, loop=controller,
                  **({"read_output": reader} if reader is not None else {}))
    controller.refresh_inventory(wait=False)
    controller.reconcile_inventory(ctx.clock.now())  # the inventory is there before the first caller
    release_stale_reservations(ctx)  # a MIG re-cut the last run did not finish
    return Daemon(ctx=ctx, controller=controller, relay=RelayEnv(ctx=ctx, executor=executor, terminals=terminals))


def _tune_gc() -> None:
    """What the daemon built at start (config, mappers, compiled statements) stays for its life: kept out of
    the collector's way (``gc.freeze``), and young collections run less often. Each job's transactions
    make thousands of short-lived objects; with the default threshold (700) the collector ran many times
    per job."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def run(config_path: str | None, log_level: str = "INFO", metrics_port: int | None = None) -> None:
    from ds01q.daemon.server import serve

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    daemon = build(config_path)
    _tune_gc()
    os.makedirs(daemon.ctx.config.executor.state_dir, exist_ok=True)
    if metrics_port is not None:
        from ds01q.daemon.metrics import start_exporter

        start_exporter(daemon.ctx, metrics_port)
    serve(daemon)
