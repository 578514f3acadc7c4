"""Run the nvidia-smi commands of a MIG layout change.

The controller only issues commands. Draining the GPU first (no running jobs,
no CUDA contexts) is the daemon's job: nvidia-smi refuses to destroy busy
instances ("In use by another client") and this module reports that failure.
"""
from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence

from ds01q.errors import InventoryError
from ds01q.mig.planner import Plan, mig_commands

__all__ = ["Runner", "run_subprocess", "MigController"]

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]
"""Runs one argv and returns its CompletedProcess (returncode, stdout, stderr)."""

COMMAND_TIMEOUT_S = 300


def run_subprocess(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The default runner: no shell, output captured, a generous timeout (MIG changes can reset the GPU)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)


def _one_line(text: object) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text or "").split())


class MigController:
    """Applies MIG layouts with an injected runner (tests pass a fake; the default runs subprocesses)."""

    def __init__(self, run: Runner | None = None) -> None:
        self._run: Runner = run or run_subprocess

    def apply(self, gpu_index: int, current: Sequence[str], layout: Sequence[str], dry_run: bool = False,
              gpu_name: str | None = None) -> list[str]:
        """Turn GPU ``gpu_index`` from ``current`` into ``layout``; returns the commands (run or, dry, not).

        Raises InventoryError at the first failing command, naming it and its stderr.
        """
        commands = mig_commands(gpu_index, current, layout, gpu_name=gpu_name)
        return self.run_commands(commands, dry_run=dry_run)

    def apply_plan(self, plan: Plan, dry_run: bool = False) -> list[str]:
        return self.run_commands(plan.commands, dry_run=dry_run)

    def run_commands(self, commands: Sequence[str], dry_run: bool = False) -> list[str]:
        commands = list(commands)
        if dry_run:
            return commands
        for done, command in enumerate(commands):
            self._run_one(command, done, len(commands))
        return commands

    def _run_one(self, command: str, done: int, total: int) -> None:
        progress = f"{done} of {total} commands had run; re-read the inventory"
        try:
            result = self._run(shlex.split(command))
        except FileNotFoundError:
            raise InventoryError(f"MIG command failed: {command}: nvidia-smi not found on PATH ({progress})") from None
        except subprocess.TimeoutExpired:
            raise InventoryError(
                f"MIG command failed: {command}: no answer after {COMMAND_TIMEOUT_S}s ({progress})"
            ) from None
        except OSError as e:
            raise InventoryError(f"MIG command failed: {command}: {_one_line(e)} ({progress})") from None
        if result.returncode != 0:
            detail = _one_line(result.stderr) or _one_line(result.stdout) or "no output"
            raise InventoryError(f"MIG command failed (exit {result.returncode}): {command}: {detail} ({progress})")
