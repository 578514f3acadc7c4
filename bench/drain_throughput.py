"""Drain N one-slice jobs over S slices through ds01q's Docker executor, beside `docker run` with S at
a time, measured in the same run. Prints figures; asserts nothing.

    python bench/drain_throughput.py [--jobs 200] [--slices 8] [--repeat 3] [--submit each|batch] [--json]

Two `docker run` baselines: ``plain`` is ``docker run --rm IMAGE true``; ``same`` runs the same containers
ds01q runs: its flags are read back (``docker inspect``) from a container the daemon started for a job of
this benchmark (user, environment, workdir and script bind mounts, ``--init``, ``--cap-drop ALL``,
``no-new-privileges``, the user's network, the cgroup parent, the pids limit, the output wrapper).
Each round runs all three, rotating which goes first; the figures are medians over the rounds (each
``ratio`` is the median of the rounds' own ratios), with the load average at the end of each round.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._daemon import BenchDaemon, gpus  # noqa: E402
from ds01q.client.api import Client  # noqa: E402

IMAGE = "ds01q/busybox:test"


def plain(jobs: int, width: int, args: list[str] | None = None) -> float:
    """``jobs`` times ``docker run --rm [args]``, ``width`` at a time; ``args`` defaults to the bare image and ``true``."""
    argv = ["docker", "run", "--rm", *(args or [IMAGE, "true"])]
    t = time.perf_counter()
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(lambda _: subprocess.run(argv, check=True, capture_output=True), range(jobs)))
    return time.perf_counter() - t


def same_container(d: BenchDaemon) -> list[str]:
    """`docker run` arguments for the container ds01q starts for a job of this benchmark, read back with
    `docker inspect` from a running one (its per-job names and the daemon's own labels left out)."""
    hold = d.script("hold.sh", "sleep 30\n")
    with Client(d.sock) as c:
        job = c.submit(hold, workdir=str(d.root), mig="1g.5gb")
        for _ in range(600):
            if c.show(job)["state"] == "RUNNING":
                break
            time.sleep(0.05)
        ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=ds01q.job={job}", "--filter",
                              f"label=ds01q.instance={d.root.name.replace('_', '-')}"],
                             capture_output=True, text=True, check=True).stdout.split()
        attrs = json.loads(subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True,
                                          check=True).stdout)[0]
        c.cancel(job)
    cfg, host = attrs["Config"], attrs["HostConfig"]
    script = d.script("same.sh", "true\n")
    out = str(d.root / "same.out")
    args = ["--user", cfg["User"], "--workdir", cfg["WorkingDir"], "--network", host["NetworkMode"],
            "--security-opt", ",".join(host["SecurityOpt"]), "--cap-drop", "ALL", "--pids-limit", str(host["PidsLimit"]),
            # the daemon names one cgroup per job under this parent; here all share the parent
            "--cgroup-parent", host["CgroupParent"].rsplit("/", 1)[0],
            "--mount", f"type=bind,src={d.root},dst={cfg['WorkingDir']}",
            "--mount", f"type=bind,src={script},dst=/ds01q/job,readonly"]
    args += ["--init"] if host.get("Init") else []
    for e in cfg["Env"]:
        args += ["--env", "DS01Q_OUTPUT=" + out if e.startswith("DS01Q_OUTPUT=") else e]
    return [*args, cfg["Image"], *cfg["Cmd"]]


def through_ds01q(d: BenchDaemon, jobs: int, submit: str = "each") -> float:
    """``each``: one submit request per job (as a loop of ``ds01q submit``); ``batch``: all of them in one
    request and one transaction (``Client.submit_many``, the batch API, as a sweep would)."""
    script = d.script("one.sh", "true\n")
    with Client(d.sock) as c:
        t = time.perf_counter()
        if submit == "batch":
            ids = c.submit_many([{"script": "true\n", "workdir": str(d.root), "mig": "1g.5gb"}] * jobs)
        else:
            ids = [c.submit(script, workdir=str(d.root), mig="1g.5gb") for _ in range(jobs)]
        c.wait_states(ids)  # the daemon answers once every job has ended (the `wait` request)
        elapsed = time.perf_counter() - t
        bad = [i for i in ids if c.show(i)["state"] != "COMPLETED"]
    if bad:
        raise RuntimeError(f"{len(bad)} jobs did not complete, e.g. {bad[:3]}")
    return elapsed


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds; each runs both, alternating which goes first (the load on a shared machine drifts)")
    ap.add_argument("--submit", choices=("each", "batch"), default="each",
                    help="ds01q's jobs: one submit request each (default), or all in one batch request")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    per_gpu = 7
    n_gpus = -(-a.slices // per_gpu)
    inv = gpus(n_gpus, ["1g.5gb"] * per_gpu)
    extra = n_gpus * per_gpu - a.slices
    if extra:
        inv[-1]["mig"] = inv[-1]["mig"][: per_gpu - extra]
    subprocess.run(["docker", "run", "--rm", IMAGE, "true"], check=True, capture_output=True)
    rounds = []
    order = ["ds01q", "plain", "same"]
    for r in range(a.repeat):
        t: dict[str, float] = {}
        for which in order[r % 3:] + order[:r % 3]:
            with BenchDaemon(inv) as d:  # the same-container run uses the daemon's workdir and network
                if which == "ds01q":
                    t[which] = through_ds01q(d, a.jobs, a.submit)
                elif which == "same":
                    args = same_container(d)
                    t[which] = plain(a.jobs, a.slices, args)
                else:
                    t[which] = plain(a.jobs, a.slices)
        row = {"round": r + 1, "docker_run_s": round(t["plain"], 2), "docker_run_same_s": round(t["same"], 2),
               "ds01q_s": round(t["ds01q"], 2), "ratio": round(t["ds01q"] / t["plain"], 3),
               "ratio_same": round(t["ds01q"] / t["same"], 3), "load": load()}
        rounds.append(row)
        if a.repeat > 1 and not a.json:
            print("  ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
    out = {"jobs": a.jobs, "slices": a.slices, "rounds": a.repeat, "submit": a.submit,
           "docker_run_s": round(statistics.median(x["docker_run_s"] for x in rounds), 2),
           "docker_run_same_s": round(statistics.median(x["docker_run_same_s"] for x in rounds), 2),
           "ds01q_s": round(statistics.median(x["ds01q_s"] for x in rounds), 2),
           "ratio": round(statistics.median(x["ratio"] for x in rounds), 3),
           "ratio_same": round(statistics.median(x["ratio_same"] for x in rounds), 3), "load": load()}
    if a.json:
        out["each"] = rounds
    print(json.dumps(out) if a.json else "\n".join(f"{k:>14}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
