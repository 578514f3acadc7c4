"""`ds01q submit --dry-run --json` over the whole #SBATCH corpus against a real daemon (process executor, no
Docker): each script's job, as the daemon would queue it, matches the request Slurm resolves
(tests/fixtures/sbatch/expected.yaml), with the warnings; nothing is queued. Then the CLI's own options
over a script's directives, warnings on stderr, holds, and `queue` with arrays collapsed or expanded."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ds01q.config import load
from ds01q.slurm_values import expand_pattern
from ds01q.units import parse_duration, parse_size
from tests.support import Daemon, base_config, run_cli_as

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "sbatch"
EXPECTED: dict[str, dict[str, Any]] = __import__("yaml").safe_load((CORPUS / "expected.yaml").read_text())
MIB = 1024 * 1024
GPUS = ([{"uuid": f"GPU-h100-{i}", "name": "NVIDIA H100 80GB HBM3"} for i in range(4)]
        + [{"uuid": f"GPU-a100-80-{i}", "name": "NVIDIA A100-SXM4-80GB"} for i in range(2)]
        + [{"uuid": "GPU-a100-40", "name": "NVIDIA A100-PCIE-40GB",
            "mig": [{"uuid": "MIG-a100-40-1", "profile": "3g.20gb"}, {"uuid": "MIG-a100-40-2", "profile": "2g.10gb"},
                    {"uuid": "MIG-a100-40-3", "profile": "1g.5gb"}]},
           {"uuid": "GPU-v100", "name": "Tesla V100-SXM2-32GB"}, {"uuid": "GPU-titan", "name": "NVIDIA TITAN RTX"}])


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    root = Path(tempfile.mkdtemp(prefix="ds01q-slurm-", dir="/tmp"))
    root.chmod(0o755)
    d = Daemon(root=root, config_path=root / "ds01q.yaml")
    cfg = base_config(root, executor={"kind": "process", "allowed_images": ["*"]},
                      inventory={"source": "static", "gpus": GPUS})
    cfg["users"]["root"] = {"group": "admin"}
    d.write_config(cfg)
    d.start()
    yield d
    d.stop()
    log = d.log_path.read_text() if d.log_path.exists() else ""
    shutil.rmtree(root, ignore_errors=True)
    assert "Traceback" not in log, log[-3000:]


def cli(daemon: Daemon, *args: str, cwd: Path | None = None, user: str = "root") -> Any:
    return run_cli_as(user, ["--config", str(daemon.config_path), *args], cwd or daemon.root)


def expected_request(opts: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    plain = {"profile": None, "count": 1, "min_mem_mb": 0}
    gpus, model = opts.get("gpus"), opts.get("gpu_model")
    if gpus == 0:
        return {**plain, "kind": "none", "count": 0}
    if gpus or model:
        return {**plain, "kind": "gpus", "count": gpus or 1, **({"gpu_model": model} if model else {})}
    if opts.get("mig"):
        return {**plain, "kind": "mig", "profile": opts["mig"]}
    if opts.get("gpu_mem"):
        return {**plain, "kind": "any", "min_mem_mb": parse_size(opts["gpu_mem"]) // MIB}
    return default


def expected_output(opts: dict[str, Any], name: str, job_id: int, workdir: Path) -> str:
    array = opts.get("array")
    task = array["indices"][0] if array else None
    wd = os.path.normpath(os.path.join(workdir, expand_pattern(opts["chdir"], job_id=job_id, name=name, user="root",
                                                                array_job_id=job_id, array_task_id=task))
                          ) if "chdir" in opts else str(workdir)
    pattern = opts.get("output", "ds01q-%A_%a.out" if array else "ds01q-%j.out")
    return os.path.join(wd, expand_pattern(pattern, job_id=job_id, name=name, user="root",
                                           array_job_id=job_id if array else None, array_task_id=task))


@pytest.mark.parametrize("script", sorted(EXPECTED), ids=lambda n: n.removesuffix(".sh"))
def test_dry_run_of_the_corpus_matches_slurm(daemon: Daemon, script: str) -> None:
    want = EXPECTED[script]
    r = cli(daemon, "submit", "--dry-run", "--json", str(CORPUS / script))
    if "error" in want:
        assert r.rc != 0 and want["error"] in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err, r
        return
    assert r.rc == 0, r
    job, opts = json.loads(r.out), want["options"]
    default = load(str(daemon.config_path)).groups["admin"].default_request.to_dict()
    name = opts.get("name", script)
    assert job["id"] is None and job["dry_run"] is True
    assert job["name"] == name
    assert job["time_limit_s"] == (parse_duration(opts["time"]) if "time" in opts else 7 * 86400)
    assert job["cpus"] == (float(opts["cpus"]) if "cpus" in opts else None)
    assert job["mem_bytes"] == (parse_size(opts["mem"]) if "mem" in opts else None)
    assert job["request"] == expected_request(opts, default)
    assert job["output"] == expected_output(opts, name, job["provisional_id"], daemon.root)
    array = opts.get("array")
    assert (job["array"] and {k: job["array"][k] for k in ("indices", "throttle")}) == (array or None)
    assert job["dependencies"] == opts.get("dependency")
    assert job["state"] == ("HELD" if opts.get("hold") else "PENDING")
    assert (job["eligible_at"] is not None) == ("begin" in opts)
    assert job["image"] == opts.get("image", "ds01q/busybox:test") and job["nice"] == opts.get("nice", 0)
    env = dict(opts.get("env") or {})
    env.update({n: os.environ[n] for n in (opts.get("export") or {}).get("names", []) if n in os.environ})
    assert job["env"] == env
    for part in want.get("warnings", []):
        assert any(part in w for w in job["warnings"]), (part, job["warnings"])
    assert all("\n" not in w for w in job["warnings"])
    assert r.err.count("ds01q: warning: ") == len(job["warnings"])


def test_the_dry_runs_queued_nothing_and_options_override_directives(daemon: Daemon) -> None:
    assert json.loads(cli(daemon, "queue", "--json").out) == []
    script = daemon.root / "train.sh"
    script.write_text("#!/bin/sh\n#SBATCH -J from-script --mem=2G -c 4 --gres=gpu:a100:1 -p gpu\n"
                      "#SBATCH --array=0-3%2\necho hi\n")
    r = cli(daemon, "submit", "--dry-run", "--json", "--name", "from cli", "--mig", "2g.10gb", "--array", "5-6",
            str(script))
    job = json.loads(r.out)
    assert job["name"] == "from cli" and job["request"]["kind"] == "mig" and job["cpus"] == 4.0
    assert job["mem_bytes"] == 2 * 1024**3 and job["array"]["indices"] == [5, 6] and job["array"]["throttle"] is None
    assert "--partition=gpu ignored" in r.err and r.err.count("\n") == 1


def test_submit_hold_release_and_queue_arrays(daemon: Daemon) -> None:
    script = daemon.root / "sweep.sh"
    script.write_text("#!/bin/sh\n#SBATCH --hold\n#SBATCH --gpus=0\necho $SLURM_ARRAY_TASK_ID\n")
    r = cli(daemon, "submit", "--array", "0-9%3", str(script))
    assert r.rc == 0 and "(array of 10 tasks)" in r.out, r
    first = int(r.out.split()[3])
    rows = [line.split()[0] for line in cli(daemon, "queue").out.splitlines()[1:]]
    assert len(rows) == 10 and rows[0] == f"{first}_0"  # HELD tasks keep their own rows
    r = cli(daemon, "release", str(first))
    assert r.rc == 0 and r.out.count("PENDING") == 10, r
    queue = cli(daemon, "queue").out.splitlines()[1:]
    pending = [line for line in queue if "PENDING" in line]
    assert len(pending) <= 1 and (not pending or pending[0].split()[0].startswith(f"{first}_"))  # one line
    expanded = cli(daemon, "queue", "-r").out.splitlines()[1:]
    assert len(expanded) <= 10 and all(line.split()[0].startswith(f"{first}_") for line in expanded), expanded
    deadline = time.monotonic() + 60  # the tasks (echo) run, three at a time
    while json.loads(cli(daemon, "queue", "--json").out) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(cli(daemon, "queue", "--json").out) == []
    assert {json.loads(cli(daemon, "show", str(first + i), "--json").out)["state"] for i in range(10)} == {"COMPLETED"}


# ----------------------------------------------------------------------------- the Slurm shims
def shim(daemon: Daemon, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, DS01Q_SOCKET=daemon.socket, **(env or {}))
    return subprocess.run([sys.executable, "-m", "ds01q.cli.slurm_shims", *argv], capture_output=True, text=True,
                          env=full_env, cwd=daemon.root, timeout=60)


def test_sbatch_squeue_scancel_sacct(daemon: Daemon) -> None:
    script = daemon.root / "slurm.sh"
    script.write_text("#!/bin/sh\n#SBATCH --job-name=from-script\n#SBATCH --gpus=0 --hold\necho $SLURM_JOB_NAME\n")
    r = shim(daemon, "sbatch", "--parsable", "-J", "shim job", "--array=1-4%2", "-p", "any", str(script), "--parsable")
    assert r.returncode == 0 and "--partition=any ignored" in r.stderr, r
    first = int(r.stdout)
    job = json.loads(cli(daemon, "show", str(first), "--json").out)
    assert job["name"] == "shim job" and job["args"] == ["--parsable"] and job["state"] == "HELD"
    r = shim(daemon, "squeue")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["JOBID", "PARTITION", "NAME", "USER", "ST", "TIME", "NODES", "NODELIST(REASON)"]
    assert any(line.split()[0] == f"{first}_1" and "(Held)" in line for line in lines[1:]), r.stdout
    r = shim(daemon, "squeue", "-u", "root", "-h", "-o", "%i|%j|%T|%.4a|%-3D|")
    assert f"{first}_2|shim job|HELD|   2|1  |" in r.stdout.splitlines(), r.stdout
    assert shim(daemon, "squeue", "-u", "nobody-here", "-h").stdout == ""
    r = shim(daemon, "scancel", str(first))
    assert r.returncode == 0, r
    r = shim(daemon, "sacct", "-j", str(first), "--format=JobID,JobName,State,ExitCode", "-P", "-n")
    assert sorted(r.stdout.splitlines()) == [f"{first}_{t}|shim job|CANCELLED|0:0" for t in (1, 2, 3, 4)], r
    r = shim(daemon, "sacct", "-j", str(first), "--format=JobID,Bogus")
    assert r.returncode == 2 and "not a field" in r.stderr and r.stderr.count("\n") == 1


def test_srun_inside_and_outside_a_job_and_salloc(daemon: Daemon) -> None:
    r = shim(daemon, "srun", "-n", "1", "echo", "inside", env={"SLURM_JOB_ID": "7"})
    assert r.returncode == 0 and r.stdout == "inside\n", r
    r = shim(daemon, "srun", "--gpus=0", "-t", "5", "sh", "-c", "echo outside $SLURM_NTASKS; exit 3")
    assert r.returncode == 3 and "outside 1" in r.stdout, r
    from ds01q.cli.slurm_shims import salloc_argv

    assert salloc_argv(["--gres=gpu:a100:2", "-c", "4", "--mem=8G", "-t", "1:00:00", "-p", "x"]) == [
        "shell", "--gres", "gpu:a100:2", "--cpus", "4", "--mem", "8g", "--time", "1:00:00"]
    assert salloc_argv(["--mig", "2g.10gb"]) == ["shell", "--mig", "2g.10gb"]


def test_install_shims_never_replaces_a_real_slurm(tmp_path: Path) -> None:
    from ds01q.cli.slurm_shims import SHIMS, install

    assert sorted(Path(p).name for p in install(str(tmp_path))) == sorted(SHIMS)
    assert os.access(tmp_path / "sbatch", os.X_OK) and install(str(tmp_path))  # ours: replaced again
    (tmp_path / "squeue").write_text("#!/bin/sh\n# the real one\n")
    from ds01q.errors import RequestError

    with pytest.raises(RequestError) as e:
        install(str(tmp_path))
    assert "not a ds01q shim" in str(e.value)
    install(str(tmp_path), force=True)
    assert "ds01q slurm shim" in (tmp_path / "squeue").read_text()


def test_top_once_off_a_terminal(daemon: Daemon) -> None:
    r = cli(daemon, "top", "--once")
    assert r.rc == 0 and "GPUs and slices" in r.out and "NVIDIA H100" in r.out and "Pending" in r.out, r
