"""Runs the foreign-GPU-process watch (services.baremetal) on a schedule when the inventory is NVML."""
from __future__ import annotations

import logging
import threading
from typing import Any

from ds01q.inventory.gpuprocs import read_gpu_processes
from ds01q.services import Context
from ds01q.services.baremetal import WATCHES, GpuWatch

log = logging.getLogger(__name__)


def start_gpu_watch(ctx: Context, pynvml_module: Any = None) -> tuple[GpuWatch, threading.Event] | None:
    if ctx.config.inventory_source not in ("nvml", "auto"):
        return None
    watch = GpuWatch(ctx, lambda: read_gpu_processes(pynvml_module))
    WATCHES[id(ctx.settings)] = watch
    stop = threading.Event()

    def run() -> None:
        while True:
            try:
                watch.scan()
            except Exception as e:  # the watch must never take the daemon down
                log.warning("GPU process scan failed: %s", e)
            grace = ctx.config.security.foreign_gpu_grace_s
            if stop.wait(max(1.0, min(30.0, grace / 4))):
                return

    threading.Thread(target=run, name="ds01q-gpuwatch", daemon=True).start()
    return watch, stop
