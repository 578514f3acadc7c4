"""The set-up installs ds01q for every local user: ``scripts/install`` into a fresh prefix (from the system's
python3, not one under /root), then an unprivileged ``useradd`` account runs the installed ``ds01q --version``
and ``ds01q queue`` against a real daemon, and the bash, zsh and fish completions are in place."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import Daemon, base_config, ensure_user

REPO = Path(__file__).resolve().parents[2]
USER = "ds01q-stu1"


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="needs the system's /usr/bin/python3")
def test_installed_client_runs_for_an_unprivileged_user() -> None:
    root = Path(tempfile.mkdtemp(prefix="ds01q-inst-", dir="/tmp"))
    root.chmod(0o755)
    env = dict(os.environ, DS01Q_PREFIX=str(root / "opt" / "venv"), DS01Q_BINDIR=str(root / "bin"),
               DS01Q_SHARE=str(root / "share"), DS01Q_NO_UNIT="1", PYTHON="/usr/bin/python3")
    env.pop("VIRTUAL_ENV", None)
    d = Daemon(root=root, config_path=root / "ds01q.yaml")
    try:
        r = subprocess.run(["bash", str(REPO / "scripts" / "install")], env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "ds01q installed in" in r.stdout
        share = root / "share"
        assert "complete" in (share / "bash-completion/completions/ds01q").read_text()
        assert "compdef" in (share / "zsh/vendor-completions/_ds01q").read_text()
        assert "complete" in (share / "fish/vendor_completions.d/ds01q.fish").read_text()
        d.write_config(base_config(root, executor={"kind": "process"}))
        d.start()
        pw = ensure_user(USER)
        ds01q = str(root / "bin" / "ds01q")
        assert not os.path.realpath(ds01q).startswith("/root/")

        def as_user(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([ds01q, *args], user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], cwd="/tmp",
                                  env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "DS01Q_SOCKET": d.socket},
                                  capture_output=True, text=True, timeout=60)

        r = as_user("--version")
        assert r.returncode == 0 and r.stdout.startswith("ds01q, version "), r
        r = as_user("queue")
        assert r.returncode == 0 and r.stdout.split()[:2] == ["JOBID", "NAME"], r
        r = subprocess.run([str(root / "bin" / "ds01q-slurm"), "squeue", "--help"], user=pw.pw_uid,
                           group=pw.pw_gid, extra_groups=[], cwd="/tmp", env={"PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)
