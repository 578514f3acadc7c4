"""Composition root of ``ds01q server``: config → database → executor → controller → socket."""
from __future__ import annotations

import logging
import os

from ds01q.config import Config, load
from ds01q.db import make_engine, make_sessionmaker, upgrade
from ds01q.errors import ExecutorError
from ds01q.executors.base import Executor
from ds01q.services.context import Context


def db_upgrade(config_path: str | None) -> str:
    cfg = load(config_path)
    upgrade(cfg.database)
    return cfg.database


def make_executor(cfg: Config) -> tuple[Executor, str | None]:
    """The configured executor and the cgroup driver to place containers under (None: no parent)."""
    if cfg.executor.kind == "process":
        from ds01q.executors.process import ProcessExecutor

        return ProcessExecutor(state_dir=cfg.executor.state_dir), None
    from ds01q.executors.docker import DockerExecutor

    inst = cfg.executor.instance
    ex = DockerExecutor(instance=inst, name_prefix=f"ds01q-{inst}" if inst else "ds01q")
    driver = cfg.executor.cgroup_driver
    if driver == "auto":
        driver = ex.cgroup_driver()
    return ex, (None if driver == "none" else driver)


def build(config_path: str | None) -> tuple[Context, object]:
    from ds01q.controller import Controller

    cfg = load(config_path)
    upgrade(cfg.database)
    engine = make_engine(cfg.database)
    ctx = Context(config=cfg, sessions=make_sessionmaker(engine))
    try:
        executor, driver = make_executor(cfg)
    except ExecutorError:
        raise
    except Exception as e:
        raise ExecutorError(f"cannot reach the Docker engine ({type(e).__name__}): start dockerd, "
                            "or set executor.kind: process") from None
    controller = Controller(ctx, executor, driver)
    controller.refresh(wait=False)
    controller.reconcile_inventory(ctx.clock.now())  # the inventory is there before the first caller
    return ctx, controller


def run(config_path: str | None, log_level: str = "INFO", metrics_port: int | None = None) -> None:
    from ds01q.server import serve

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx, controller = build(config_path)
    os.makedirs(ctx.config.executor.state_dir, exist_ok=True)
    if metrics_port is not None:
        from ds01q.metrics import start_exporter

        start_exporter(ctx, metrics_port)
    serve(ctx, controller)
