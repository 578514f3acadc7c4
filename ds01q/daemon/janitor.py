"""A daemon thread that runs housekeeping on a schedule: payload retention (services.retention)."""
from __future__ import annotations

import logging
import threading

from ds01q.services import Context
from ds01q.services.retention import prune_payloads

log = logging.getLogger(__name__)


class Janitor:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ds01q-janitor", daemon=True)

    def interval_s(self) -> float:
        return max(1.0, min(3600.0, self.ctx.config.security.payload_retention_s / 4))

    def start(self) -> "Janitor":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s()):
            try:
                n = prune_payloads(self.ctx)
                if n:
                    log.info("pruned the payload of %d finished jobs", n)
            except Exception as e:  # housekeeping must never take the daemon down
                log.warning("payload pruning failed: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)

    def stop(self) -> None:
        self._stop.set()
