"""A throw-away ds01q daemon for benchmarks: temp dir, SQLite, static inventory, real Docker."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def gpus(n_gpus: int, layout: list[str] | None) -> list[dict[str, Any]]:
    out = []
    for g in range(n_gpus):
        entry: dict[str, Any] = {"uuid": f"GPU-bench-{g:04d}", "name": "NVIDIA A100-PCIE-40GB"}
        if layout:
            entry["mig"] = [{"uuid": f"MIG-bench-{g:04d}-{i}", "profile": p} for i, p in enumerate(layout)]
        out.append(entry)
    return out


class BenchDaemon:
    def __init__(self, inventory: list[dict[str, Any]], tick: str = "1s", executor: str = "docker") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ds01q-bench-", dir="/tmp"))
        self.root.chmod(0o755)
        self.sock = str(self.root / "ds01q.sock")
        self.config = self.root / "ds01q.yaml"
        self.config.write_text(yaml.safe_dump({
            "database": f"sqlite:///{self.root}/ds01q.db",
            "server": {"socket": self.sock, "tick": tick},
            "executor": {"kind": executor, "default_image": "ds01q/busybox:test", "state_dir": str(self.root / "st"),
                         "stop_grace": "1s", "allowed_roots": [str(self.root), "/tmp"],
                         "instance": self.root.name.replace("_", "-")},
            "inventory": {"source": "static", "gpus": inventory},
            "groups": {"admin": {"priority": 30, "admin": True}},
            "default_group": "admin",
        }))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BenchDaemon:
        return self.start()

    def kill(self) -> None:
        """SIGKILL the daemon (its containers keep running)."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def start(self) -> BenchDaemon:
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "ds01q.cli.main", "--config", str(self.config), "server",
                                      "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
        for _ in range(300):
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.sock)
                s.close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("daemon did not start: " + (self.root / "server.log").read_text()[-2000:])

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        from tests.support import remove_test_containers  # its containers, and what a killed daemon left

        remove_test_containers(self.root.name.replace("_", "-"))
        shutil.rmtree(self.root, ignore_errors=True)

    def script(self, name: str, body: str) -> str:
        p = self.root / name
        p.write_text(body)
        os.chmod(p, 0o644)
        return str(p)
