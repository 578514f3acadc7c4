"""`admin mig apply`'s partial re-cut, on the services side: read the inventory, plan with
``placement.plan_recut``, and run the plan through ``inventory.recut.Recutter`` (see there:
reserve, one instance at a time through the MigController, re-read and sync after each step).
A plan that needs the whole GPU is returned unapplied (``full_drain``): the caller drains the
GPU instead."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ds01q.config import Config
from ds01q.errors import RequestError
from ds01q.inventory.nvml import GpuRecord
from ds01q.inventory.recut import RESERVED, Reader, Recutter, busy_slices, instances, record_of
from ds01q.inventory.recut import release_stale_reservations as _release_stale
from ds01q.inventory.sync import recorded_instances
from ds01q.mig.placement import RecutPlan, plan_recut
from ds01q.mig.profiles import is_valid_layout, require_model
from ds01q.mig.smi import MigController
from ds01q.services.context import Context

__all__ = ["RESERVED", "Reader", "default_reader", "plan_gpu", "apply_recut", "release_stale_reservations",
           "parse_layout"]


def default_reader(cfg: Config) -> Reader:
    """Read this node's GPUs the way the loop does: NVML, or the declared ones for a static inventory."""
    def read() -> Sequence[GpuRecord]:
        from ds01q.inventory.static import static_inventory

        if cfg.inventory_source == "static":
            return static_inventory(list(cfg.inventory_gpus), node=cfg.node)
        from ds01q.inventory.nvml import read_nvml

        return read_nvml(node=cfg.node)

    return read


def plan_gpu(ctx: Context, gpu: str, target: Sequence[str], read: Reader) -> tuple[RecutPlan, GpuRecord]:
    rec = record_of(read(), gpu)
    model = require_model(rec.name)
    if not is_valid_layout(model, list(target)):
        raise RequestError(f"layout {', '.join(target) or '(empty)'} does not fit on {rec.name} "
                           f"(profiles: {', '.join(model.profile_names)}; or full)")
    with ctx.sessions() as session:
        busy = busy_slices(session, gpu)
        recorded = recorded_instances(session, gpu)
    return plan_recut(model, instances(rec, busy, recorded), list(target), mig_enabled=rec.mig_enabled), rec


def release_stale_reservations(ctx: Context) -> list[str]:
    return _release_stale(ctx.sessions, ctx.clock.now())


def apply_recut(ctx: Context, gpu: str, target: Sequence[str], *, mig: MigController | None = None,
                read: Reader | None = None, by: str = "ds01q") -> dict[str, Any]:
    """Re-cut ``gpu`` to ``target`` touching only free instances.

    Returns ``{"applied", "full_drain", "plan", "steps_done", "commands"}``; ``full_drain``
    True (and nothing applied) when busy instances stand in the way.
    """
    read = read or default_reader(ctx.config)
    plan, rec = plan_gpu(ctx, gpu, target, read)
    out: dict[str, Any] = {"gpu": gpu, "plan": plan.to_json(), "full_drain": plan.full_drain, "applied": False,
                           "steps_done": 0, "commands": []}
    if plan.full_drain or not plan.steps:
        return out
    out.update(Recutter(ctx.sessions, ctx.clock.now, ctx.config.node, read, mig, by).run(rec, plan, ctx.wake))
    return out


def parse_layout(value: object) -> list[str] | None:
    """``--layout 2g.10gb,1g.5gb,...`` (a string or a list); None when not given."""
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise RequestError("--layout: expected profile names separated by commas, e.g. 2g.10gb,1g.5gb")
    return [x.strip() for x in items]
