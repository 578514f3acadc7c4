"""``wait``: block until jobs end, answering once (``Client.wait``, ``submit --wait``, ``srun``).

A waiting client used to ask ``show`` five times a second; a job's full view (slices, events, usage)
is the dearest read the daemon answers. Here the daemon looks at the jobs' states only
(``store.job_states``) every ``POLL_S``, and answers when all of them are final or after ``timeout``
seconds (``DEFAULT_WAIT_S`` without one, at most ``MAX_WAIT_S``, so a request never outlives a client's
read timeout).
"""
from __future__ import annotations

import time
from typing import Any

from ds01q.db import store
from ds01q.db.jobstate import EDGES
from ds01q.errors import NotFound, RequestError
from ds01q.services.context import Caller, Context
from ds01q.services.jobs import _ids
from ds01q.types import FINAL_NAMES, JobState

MAX_WAIT_S = 20.0
DEFAULT_WAIT_S = 5.0  # a request without a timeout (the client always sends one)
POLL_S = 0.2
# final states no job leaves (NODE_FAIL can go back to the queue: read again until the answer)
SETTLED = frozenset(s.value for s in JobState if s.value in FINAL_NAMES and not EDGES[s])


def _timeout(value: Any) -> float:
    if value is None:
        return DEFAULT_WAIT_S
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_WAIT_S:
        raise RequestError(f"timeout: seconds from 0 to {MAX_WAIT_S:g}")
    return float(value)


def wait(ctx: Context, caller: Caller, a: dict[str, Any]) -> dict[str, Any]:
    """``{"states": {id: state}, "done": bool}`` once every job in ``ids`` is final, or at ``timeout``."""
    ids = _ids(a.get("ids"))
    deadline = time.monotonic() + _timeout(a.get("timeout"))
    states: dict[int, str] = {}
    while True:
        ask = [i for i in ids if states.get(i) not in SETTLED]  # a settled job is not read again
        with ctx.sessions() as session:
            states.update(store.job_states(session, ask))
        missing = [i for i in ask if i not in states]
        if missing:
            raise NotFound(f"job {missing[0]} not found")
        done = all(s in FINAL_NAMES for s in states.values())
        if done or time.monotonic() >= deadline:
            return {"states": {str(i): states[i] for i in ids}, "done": done}
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
