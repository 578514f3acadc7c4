"""Read this node's GPUs (NVML or the config's declared ones) and reconcile them into the
database; jobs whose slice vanished are stopped with outcome LAYOUT_CHANGE."""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ds01q.config import Config
from ds01q.db import store
from ds01q.db.jobstate import request_stop
from ds01q.errors import InventoryError
from ds01q.inventory.sync import SyncResult, sync
from ds01q.types import StopOutcome


def read_inventory(cfg: Config) -> list[Any]:
    """GpuRecords from NVML or from the config's declared GPUs (source static, or auto without a driver)."""
    from ds01q.inventory.static import static_inventory

    if cfg.inventory_source == "static":
        return static_inventory(list(cfg.inventory_gpus), node=cfg.node)
    from ds01q.inventory.nvml import read_nvml

    try:
        return read_nvml(node=cfg.node)
    except InventoryError:
        if cfg.inventory_source == "auto":
            return static_inventory(list(cfg.inventory_gpus), node=cfg.node)
        raise


def reconcile(session: Session, records: list[Any], now: float, node: str) -> SyncResult:
    """Sync ``node``'s inventory and stop the jobs that lost a slice, in the caller's transaction."""
    res = sync(session, records, now, node=node)
    for job_id in res.failed_jobs:
        request_stop(session, store.get_job(session, job_id), StopOutcome.LAYOUT_CHANGE, at=now, by="ds01q",
                     detail="mig layout changed", note="mig layout changed: its slice is gone")
    return res
