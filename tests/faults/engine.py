"""A private Docker engine for the fault suite: its own containerd and dockerd (roots in a temporary
directory, their own sockets, their own network namespace, no iptables), so a test can SIGKILL the engine
itself and start it again, with or without live-restore, without touching the engine other tests
share. The test image is copied in from the shared engine (no registry).

containerd is started here rather than by dockerd: a containerd that dockerd started and that
outlived it is re-parented to PID 1, and where PID 1 does not reap (a container or micro-VM init)
it stays a zombie whose pid file makes the next dockerd wait for it for ever."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker

IMAGE = "ds01q/busybox:test"  # built by scripts/ci-services.sh on the shared engine


class PrivateEngine:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ds01q-pe-", dir="/tmp"))
        self.sock = self.root / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.containerd: subprocess.Popen[bytes] | None = None
        # Its own network namespace: bridges, veths and address pools of this engine never meet the
        # host's (a second dockerd in the host's namespace deletes or reuses the shared engine's docker0).
        self.netns = f"ds01qpe-{os.getpid()}-{random.randrange(1 << 30):x}"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.sock}"

    def _start_containerd(self, timeout: float) -> str:
        sock = self.root / "containerd.sock"
        conf = self.root / "containerd.toml"
        conf.write_text(f'version = 2\nroot = "{self.root}/containerd-root"\nstate = "{self.root}/containerd-state"\n'
                        f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{sock}"\n')
        with open(self.root / "containerd.log", "ab") as log:
            self.containerd = subprocess.Popen(self._in_netns(["containerd", "--config", str(conf)]), stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not sock.exists() and time.monotonic() < deadline and self.containerd.poll() is None:
            time.sleep(0.1)
        return str(sock)

    def _in_netns(self, argv: list[str]) -> list[str]:
        if not Path(f"/run/netns/{self.netns}").exists():
            subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
            subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True, capture_output=True)
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]  # nsenter execs: the pid is the engine's

    def start(self, live_restore: bool = False, timeout: float = 60, start_delay_s: float = 0.0) -> None:
        """``start_delay_s``: every container start takes that much longer (a loaded machine), between the
        container's creation by runc (its mounts made) and its process's start: the engine lists it as
        created, not running, meanwhile. A wrapper of runc, the engine's default runtime, waits there."""
        args = self._in_netns([
            "dockerd", "--containerd", self._start_containerd(timeout), "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"), "-H", self.docker_host,
            "--pidfile", str(self.root / "docker.pid"), "--iptables=false", "--ip-masq=false"])
        if live_restore:
            args.append("--live-restore")
        if start_delay_s:
            slow = self.root / "slow-runc"
            slow.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = start ] && sleep {start_delay_s} && break; done\n'
                            f'exec {shutil.which("runc") or "runc"} "$@"\n')
            slow.chmod(0o755)
            args += ["--add-runtime", f"slow={slow}", "--default-runtime", "slow"]
        with open(self.root / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                docker.DockerClient(base_url=self.docker_host, timeout=5).ping()
                return
            except Exception:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.3)
        raise RuntimeError(f"private dockerd did not start:\n{self.log()[-3000:]}")

    def load_test_image(self) -> None:
        shared = docker.from_env(environment={})  # the shared engine at /var/run/docker.sock
        data = b"".join(shared.images.get(IMAGE).save(named=True))
        docker.DockerClient(base_url=self.docker_host, timeout=60).images.load(data)

    def kill(self) -> None:
        """SIGKILL the engine, dockerd and containerd (containers live on in their shims)."""
        for p in (self.proc, self.containerd):
            assert p is not None
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    def log(self) -> str:
        p = self.root / "dockerd.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:  # killed and not restarted by the test:
            try:  # an engine without live-restore stops what outlived the last one in its shims
                self.start(live_restore=False)
            except RuntimeError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            try:
                c = docker.DockerClient(base_url=self.docker_host, timeout=10)
                for ct in c.containers.list(all=True):
                    ct.remove(force=True)
            except Exception:
                pass
        for p in (self.proc, self.containerd):
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            mnt = line.split()[1]
            if mnt.startswith(str(self.root)):
                subprocess.run(["umount", "-l", mnt], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)  # its bridges and veths with it
        shutil.rmtree(self.root, ignore_errors=True)

