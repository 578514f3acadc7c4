"""docs/user-guide.md and docs/admin-guide.md run as written: each guide's ``# file:`` blocks are written to a
directory, then each ``$ `` command of its ``console`` blocks runs there with bash, in order, against a real
daemon (process executor, a static inventory of MIG slices), as root; every one must exit 0 with no
traceback. Blocks in ``sh`` without ``# file:`` are illustrative (each guide says why) and are not run."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import process_daemon

DOCS = Path(__file__).resolve().parents[2] / "docs"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(guide: Path) -> tuple[dict[str, str], list[str]]:
    files, commands = {}, []
    for kind, body in FENCE.findall(guide.read_text()):
        first, _, rest = body.partition("\n")
        if kind == "sh" and first.startswith("# file: "):
            files[first[len("# file: "):].strip()] = rest
        elif kind == "console":
            commands += [line[2:] for line in body.splitlines() if line.startswith("$ ")]
    return files, commands


@pytest.mark.parametrize("guide", ["user-guide.md", "admin-guide.md"])
def test_every_command_of_the_guide_runs(guide: str) -> None:
    files, commands = blocks(DOCS / guide)
    assert len(commands) >= 12 and all(c.startswith("ds01q ") or c.startswith("cat ") or c.startswith("grep ")
                                       for c in commands), commands
    with process_daemon("ds01q-guide-") as d:
        root = d.root
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "ds01q").write_text(f"#!/bin/sh\nexec {sys.executable} -m ds01q.cli.main \"$@\"\n")
        (bin_dir / "ds01q").chmod(0o755)
        (root / "job.sh").write_text("#!/bin/sh\necho job\n")  # the admin guide's job
        shutil.copy(FIXTURES / "ds01-infra" / "resource-limits.yaml", root / "resource-limits.yaml")
        for name, text in files.items():
            (root / name).write_text(text)
        env = dict(os.environ, DS01Q_CONFIG=str(d.config_path), HOME=str(root),
                   PATH=f"{root}/bin:{os.environ['PATH']}")
        env.pop("DS01Q_SOCKET", None)
        for command in commands:
            r = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=root, env=env, capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 0 and "Traceback" not in r.stderr, (command, r.stdout, r.stderr)
            assert all(line.startswith("ds01q: ") and "error" not in line.lower()  # warnings and progress only
                       for line in r.stderr.splitlines()), (command, r.stderr)
