"""Crash points for the fault suite (tests/faults): ``crash_point("assume")`` SIGKILLs this
process when the environment variable ``DS01Q_CRASH_AT`` names that point. The variable is
read once, at import; without it every call does nothing. The points are listed in
docs/ARCHITECTURE.md ("Crash points")."""
from __future__ import annotations

import os
import signal

POINTS = frozenset({"submit", "assume", "create", "start", "exit", "cancel", "rollup"})
_AT = os.environ.get("DS01Q_CRASH_AT", "")


def crash_point(name: str) -> None:
    """Die here, at once and without cleanup (SIGKILL), if ``DS01Q_CRASH_AT`` names ``name``."""
    if name == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
