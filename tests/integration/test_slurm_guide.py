"""docs/slurm-guide.md runs as written: its ``# file:`` blocks are written to a directory, then each ``$ ``
command of its ``console`` blocks runs there with bash against a real daemon (process executor), with `ds01q`
and the installed shims on PATH; every one must exit 0."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import process_daemon

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "slurm-guide.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks() -> tuple[dict[str, str], list[str]]:
    files, commands = {}, []
    for kind, body in FENCE.findall(GUIDE.read_text()):
        first, _, rest = body.partition("\n")
        if kind == "sh" and first.startswith("# file: "):
            files[first[len("# file: "):].strip()] = rest
        elif kind == "console":
            commands += [line[2:] for line in body.splitlines() if line.startswith("$ ")]
    return files, commands


def test_every_command_of_the_slurm_guide_runs() -> None:
    files, commands = blocks()
    assert set(files) == {"train.sh", "sweep.sh"} and len(commands) >= 12
    with process_daemon("ds01q-guide-") as d:
        root = d.root
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "ds01q").write_text(f"#!/bin/sh\nexec {sys.executable} -m ds01q.cli.main \"$@\"\n")
        (bin_dir / "ds01q").chmod(0o755)
        for name, text in files.items():
            (root / name).write_text(text)
        env = dict(os.environ, DS01Q_SOCKET=d.socket, HOME=str(root), PATH=f"{root}/bin:{os.environ['PATH']}")
        for command in commands:
            r = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=root, env=env, capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0 and "Traceback" not in r.stderr, (command, r.stdout, r.stderr)
            assert all(line.startswith("ds01q: warning: ") for line in r.stderr.splitlines()), (command, r.stderr)
