"""Slurm's commands as thin aliases of ds01q: ``sbatch``, ``squeue``, ``scancel``, ``sacct``, ``srun`` and
``salloc``, with their common flags and output formats. ``ds01q-slurm CMD ARGS`` runs one;
``ds01q install-shims`` writes ``sbatch`` … wrappers into a directory (never over a real Slurm).

- ``sbatch [opts] SCRIPT [ARGS]``: every sbatch option (read as ``#SBATCH`` lines are, overriding them),
  ``--parsable``, ``-W/--wait``.
- ``squeue [-u USER,...] [--me] [-j ID,...] [-t STATE,...] [-o FMT | --format FMT] [-h] [-r]``: ``%i %A %a %j
  %u %T %t %M %l %L %D %R %P %C %m %b %S %V %Q %r``, with ``%.10i`` (right) and ``%-10i`` (left) widths.
- ``scancel ID[_TASK] ... | -u USER``: an array's id cancels all of its tasks.
- ``sacct [-j ID,...] [-u USER] [-S 2d] [--format F,F] [-P] [-n]``: JobID, JobName, User, Partition, State,
  ExitCode, Elapsed, Start, End, Submit, AllocCPUS, ReqMem, Timelimit, NodeList, AllocTRES.
- ``srun CMD``: inside a job, runs CMD (one node, one task); outside one, queues CMD and waits for it.
- ``salloc [opts]``: ``ds01q shell`` with the same request.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import Any, Callable, Sequence

import click

from ds01q.cli.arrays_view import collapse, label
from ds01q.cli.entry import one_line_errors
from ds01q.client.api import EXIT_BY_STATE, Client
from ds01q.client.directives import parse_options
from ds01q.errors import Ds01qError, RequestError

SHIMS = ("sbatch", "squeue", "scancel", "sacct", "srun", "salloc")
MARK = "# ds01q slurm shim"
COMPACT = {"PENDING": "PD", "RUNNING": "R", "STARTING": "CF", "STOPPING": "CG", "COMPLETED": "CD", "FAILED": "F",
           "CANCELLED": "CA", "TIMEOUT": "TO", "OUT_OF_MEMORY": "OOM", "NODE_FAIL": "NF", "HELD": "PD",
           "PREEMPTED": "PR"}
SQUEUE_DEFAULT = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
SACCT_DEFAULT = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode"


def _client() -> Client:
    return Client()


def _warn(lines: Sequence[str]) -> None:
    for w in lines:
        click.echo(f"ds01q: warning: {w}", err=True)


def _duration(seconds: float | None) -> str:
    """Slurm's [D-]HH:MM:SS (M:SS under an hour)."""
    if seconds is None:
        return "INVALID"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}-{h:02d}:{m:02d}:{s:02d}"
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _elapsed(job: dict[str, Any]) -> float | None:
    from datetime import datetime, timezone

    def ts(v: str | None) -> float | None:
        return datetime.fromisoformat(v).timestamp() if v else None

    start, end = ts(job.get("started_at")), ts(job.get("ended_at"))
    if start is None:
        return 0.0
    return (end or datetime.now(timezone.utc).timestamp()) - start


def _gres(req: dict[str, Any]) -> str:
    kind = req.get("kind")
    if kind == "none":
        return "N/A"
    if kind == "gpus":
        return f"gpu:{req.get('gpu_model') + ':' if req.get('gpu_model') else ''}{req.get('count', 1)}"
    if kind == "mig":
        return f"gpu:{req.get('profile')}:1"
    return "gpu:1"


# ----------------------------------------------------------------------------- squeue
def _squeue_field(job: dict[str, Any], letter: str) -> str:
    state = job.get("state", "")
    reason = job.get("reason") or "None"
    value: Any = {
        "i": job.get("label") or label(job), "A": job.get("array_job_id") or job["id"],
        "a": job.get("array_task_id") if job.get("array_task_id") is not None else "N/A",
        "F": job.get("array_job_id") or job["id"],
        "K": job.get("array_task_id") if job.get("array_task_id") is not None else "N/A",
        "j": job.get("name"), "u": job.get("user"), "T": state, "t": COMPACT.get(state, state),
        "M": _duration(_elapsed(job)), "l": _duration(job.get("time_limit_s")), "D": 1,
        "R": ",".join(job.get("slices") or []) or job.get("node") or "localhost" if state in
        ("RUNNING", "STARTING", "STOPPING") else f"({reason})",
        "r": reason, "P": job.get("group"), "C": int(job.get("cpus") or 1),
        "m": f"{(job.get('mem_bytes') or 0) // (1024 * 1024)}M", "b": _gres(job.get("request") or {}),
        "S": job.get("started_at") or job.get("estimated_start") or "N/A", "V": job.get("submitted_at"),
        "Q": job.get("priority"), "g": job.get("group"), "N": job.get("node") or "localhost",
        "L": _duration(max(0.0, (job.get("time_limit_s") or 0) - (_elapsed(job) or 0))),
    }.get(letter)
    return "" if value is None else str(value)


_FIELD = re.compile(r"%(\.|-)?(\d*)([A-Za-z])")


def squeue_line(fmt: str, job: dict[str, Any] | None) -> str:
    """One row (``job``) or the header (None) of a squeue ``--format``."""
    headers = {"i": "JOBID", "A": "ARRAY_JOB_ID", "a": "ARRAY_TASK_ID", "F": "ARRAY_JOB_ID", "K": "ARRAY_TASK_ID",
               "j": "NAME", "u": "USER", "T": "STATE", "t": "ST", "M": "TIME", "l": "TIME_LIMIT", "D": "NODES",
               "R": "NODELIST(REASON)", "r": "REASON", "P": "PARTITION", "C": "CPUS", "m": "MIN_MEMORY",
               "b": "TRES_PER_NODE", "S": "START_TIME", "V": "SUBMIT_TIME", "Q": "PRIORITY", "g": "GROUP",
               "N": "NODELIST", "L": "TIME_LEFT"}

    def one(m: re.Match[str]) -> str:
        align, width, letter = m.group(1), m.group(2), m.group(3)
        text = headers.get(letter, letter.upper()) if job is None else _squeue_field(job, letter)
        if not width:
            return text
        w = int(width)
        text = text[:w] if align == "." else text
        return text.rjust(w) if align == "." else text.ljust(w)

    return _FIELD.sub(one, fmt.replace("%%", "\0")).replace("\0", "%")


def _ids(text: str) -> list[str]:
    return [t for t in re.split(r"[,\s]+", text) if t]


@click.command(context_settings={"help_option_names": ["--help"]})
@click.option("--user", "-u", "users", default=None, help="Only these users (comma-separated).")
@click.option("--me", is_flag=True, help="Only my jobs.")
@click.option("--jobs", "-j", default=None, help="Only these job ids.")
@click.option("--states", "-t", default=None, help="Only these states (PD,R,... or names).")
@click.option("--format", "-o", "fmt", default=None, help="squeue's %-format, e.g. '%.18i %.8j %.2t %R'.")
@click.option("--noheader", "-h", is_flag=True)
@click.option("--array", "-r", "expand", is_flag=True, help="One line per array task.")
@click.option("--long", "-l", is_flag=True)
def squeue(users: str | None, me: bool, jobs: str | None, states: str | None, fmt: str | None, noheader: bool,
           expand: bool, long: bool) -> None:
    """squeue through ds01q: pending and running jobs."""
    import pwd

    with _client() as c:
        rows = c.queue()
    wanted_users = set(_ids(users)) if users else None
    if me:
        wanted_users = {pwd.getpwuid(os.getuid()).pw_name}
    if wanted_users:
        rows = [j for j in rows if j["user"] in wanted_users]
    if jobs:
        ids = set(_ids(jobs))
        rows = [j for j in rows if str(j["id"]) in ids or str(j.get("array_job_id")) in ids or label(j) in ids]
    if states:
        want = {s.upper() for s in _ids(states)}
        rows = [j for j in rows if j["state"] in want or COMPACT.get(j["state"]) in want]
    rows = rows if expand else collapse(rows)
    fmt = fmt or ("%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R" if long else SQUEUE_DEFAULT)
    if not noheader:
        click.echo(squeue_line(fmt, None))
    for j in rows:
        click.echo(squeue_line(fmt, j))


# ----------------------------------------------------------------------------- sbatch
def _script_and_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """sbatch's ``[options] script [args]``: (option words, [script, args...])."""
    parsed = parse_options(argv)
    n = len(argv) - len(parsed.args)
    return argv[:n], parsed.args


def _exit_code(job: dict[str, Any]) -> int:
    if job["state"] in ("COMPLETED", "FAILED") and job.get("exit_code") is not None:
        return int(job["exit_code"]) & 0xFF
    return EXIT_BY_STATE.get(job["state"], 0 if job["state"] == "COMPLETED" else 1)


def sbatch(argv: Sequence[str]) -> int:
    options, rest = _script_and_options(list(argv))
    own = {"--parsable": "parsable", "-W": "wait", "--wait": "wait"}
    flags = {own[w]: True for w in options if w in own}
    options = [w for w in options if w not in own]
    if not rest:
        raise RequestError("give a batch script (sbatch [options] script [args...]; --wrap is not supported)")
    with _client() as c:
        job_id = c.submit(rest[0], rest[1:], slurm_args=options)
        _warn(c.last_warnings)
        click.echo(str(job_id) if flags.get("parsable") else f"Submitted batch job {job_id}")
        if flags.get("wait"):
            return _exit_code(c.wait(job_id))
    return 0


# ----------------------------------------------------------------------------- scancel
@click.command(context_settings={"help_option_names": ["--help"]})
@click.argument("job_ids", nargs=-1)
@click.option("--user", "-u", default=None, help="Cancel all of this user's jobs.")
def scancel(job_ids: tuple[str, ...], user: str | None) -> None:
    """scancel through ds01q: ID, ARRAYID (every task) or ARRAYID_TASK."""
    if not job_ids and not user:
        raise click.UsageError("give job ids or --user")
    with _client() as c:
        queued = c.queue()
        ids: list[int] = []
        for word in job_ids:
            m = re.fullmatch(r"(\d+)(?:_(\d+))?", word)
            if not m:
                raise RequestError(f"{word!r} is not a job id (N, ARRAYID or ARRAYID_TASK)")
            base, task = int(m.group(1)), m.group(2)
            tasks = [j["id"] for j in queued if j.get("array_job_id") == base
                     and (task is None or j.get("array_task_id") == int(task))]
            if task is not None and not tasks:
                raise RequestError(f"array task {word} is not queued or running")
            ids += tasks or [base]
        if user:
            ids += [j["id"] for j in queued if j["user"] == user]
        if ids:
            c.cancel(*sorted(set(ids)))


# ----------------------------------------------------------------------------- sacct
SACCT_FIELDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "jobid": label, "jobidraw": lambda j: j["id"], "jobname": lambda j: j.get("name"),
    "user": lambda j: j.get("user"), "partition": lambda j: j.get("group"), "account": lambda j: j.get("group"),
    "state": lambda j: j.get("state"), "exitcode": lambda j: f"{j.get('exit_code') or 0}:0",
    "elapsed": lambda j: _duration(_elapsed(j)), "start": lambda j: j.get("started_at") or "Unknown",
    "end": lambda j: j.get("ended_at") or "Unknown", "submit": lambda j: j.get("submitted_at"),
    "alloccpus": lambda j: int(j.get("cpus") or 1),
    "reqmem": lambda j: f"{(j.get('mem_bytes') or 0) // (1024 * 1024)}M",
    "timelimit": lambda j: _duration(j.get("time_limit_s")), "nodelist": lambda j: j.get("node") or "localhost",
    "alloctres": lambda j: _gres(j.get("request") or {}), "reason": lambda j: j.get("reason") or "None",
    "priority": lambda j: j.get("priority"), "group": lambda j: j.get("group"),
}


@click.command(context_settings={"help_option_names": ["--help"]})
@click.option("--jobs", "-j", default=None, help="Job ids (comma-separated).")
@click.option("--user", "-u", default=None)
@click.option("--starttime", "-S", default=None, help="Since, e.g. 2d (ds01q durations).")
@click.option("--format", "-o", "fmt", default=None, help=f"Fields, default {SACCT_DEFAULT}.")
@click.option("--parsable2", "-P", is_flag=True, help="Fields separated by |, no padding.")
@click.option("--noheader", "-n", is_flag=True)
@click.option("--allusers", "-a", is_flag=True)
def sacct(jobs: str | None, user: str | None, starttime: str | None, fmt: str | None, parsable2: bool,
          noheader: bool, allusers: bool) -> None:
    """sacct through ds01q: finished and current jobs."""
    spec = [f.strip() for f in (fmt or SACCT_DEFAULT).split(",") if f.strip()]
    cols = []
    for f in spec:
        name, _, width = f.partition("%")
        if name.lower() not in SACCT_FIELDS:
            raise click.UsageError(f"--format {name!r} is not a field (allowed: {', '.join(sorted(SACCT_FIELDS))})")
        cols.append((name, int(width) if width.isdigit() else max(10, len(name))))
    with _client() as c:
        rows = c.history(user=user, since=starttime, all_users=allusers) + c.queue(user)
        if jobs:
            wanted = set(_ids(jobs))
            rows = [j for j in rows if str(j["id"]) in wanted or str(j.get("array_job_id")) in wanted
                    or label(j) in wanted]
            missing = [int(i) for i in wanted if i.isdigit() and int(i) not in {j["id"] for j in rows}
                       and not any(str(j.get("array_job_id")) == i for j in rows)]
            for job_id in missing:
                try:
                    rows.append(c.show(job_id))
                except Ds01qError:
                    pass
    seen: set[int] = set()
    rows = [j for j in sorted(rows, key=lambda j: j["id"]) if not (j["id"] in seen or seen.add(j["id"]))]
    values = [[str(SACCT_FIELDS[n.lower()](j)) for n, _ in cols] for j in rows]
    if parsable2:
        if not noheader:
            click.echo("|".join(n for n, _ in cols))
        for v in values:
            click.echo("|".join(v))
        return
    if not noheader:
        click.echo(" ".join(n[:w].rjust(w) for n, w in cols))
        click.echo(" ".join("-" * w for _, w in cols))
    for v in values:
        click.echo(" ".join(x[:w].rjust(w) for x, (_, w) in zip(v, cols)))


# ----------------------------------------------------------------------------- srun, salloc
def srun(argv: Sequence[str]) -> int:
    """Inside a job: run the command (ds01q jobs are one node, one task). Outside: queue it and wait."""
    options, command = _script_and_options(list(argv))
    if not command:
        raise RequestError("give a command (srun [options] command [args...])")
    if os.environ.get("SLURM_JOB_ID") or os.environ.get("DS01Q_JOB_ID"):
        parsed = parse_options(options)
        _warn([f"srun inside a job: {w}" for w in parsed.warnings])
        os.execvp(command[0], command)
    import shlex

    with tempfile.NamedTemporaryFile("w", prefix="srun-", suffix=".sh", dir=os.getcwd(), delete=False) as f:
        f.write("#!/bin/sh\nexec " + " ".join(shlex.quote(w) for w in command) + "\n")
    try:
        with _client() as c:
            job_id = c.submit(f.name, (), slurm_args=options)
            _warn(c.last_warnings)
            job = c.wait(job_id)
            for chunk in c.logs(job_id):
                click.echo(chunk, nl=False)
    finally:
        os.unlink(f.name)
    return _exit_code(job)


def salloc_argv(argv: Sequence[str]) -> list[str]:
    """``ds01q shell`` arguments for salloc's options (the request; cluster options warn and go)."""
    parsed = parse_options(list(argv))
    if parsed.args:
        raise RequestError("a command after the options is not supported; use ds01q shell, then run it")
    _warn(parsed.warnings)
    o = parsed.options
    out: list[str] = []
    if o.get("gpu_model"):
        out += ["--gres", f"gpu:{o['gpu_model']}:{o.get('gpus', 1)}"]
    elif o.get("gpus") is not None:
        out += ["--gpus", str(o["gpus"])]
    for key, flag in (("mig", "--mig"), ("gpu_mem", "--gpu-mem"), ("cpus", "--cpus"), ("mem", "--mem"),
                      ("time", "--time"), ("name", "--name"), ("image", "--image")):
        if o.get(key) is not None:
            out += [flag, str(o[key])]
    return ["shell", *out]


def salloc(argv: Sequence[str]) -> int:
    from ds01q.cli.main import main as ds01q_main

    return ds01q_main(salloc_argv(argv))


# ----------------------------------------------------------------------------- entry points
def _run_click(cmd: click.Command, name: str, argv: Sequence[str]) -> int:
    rv = cmd.main(args=list(argv), prog_name=name, standalone_mode=False)
    return int(rv or 0)


def run(name: str, argv: Sequence[str]) -> int:
    """Run shim ``name`` with ``argv``: one-line errors, never a traceback."""
    def dispatch() -> int:
        if name == "sbatch":
            return sbatch(argv)
        if name == "srun":
            return srun(argv)
        if name == "salloc":
            return salloc(argv)
        if name in ("squeue", "scancel", "sacct"):
            return _run_click({"squeue": squeue, "scancel": scancel, "sacct": sacct}[name], name, argv)
        click.echo(f"ds01q-slurm: {name!r} is not a shim (allowed: {', '.join(SHIMS)})", err=True)
        return 2

    return one_line_errors(name, dispatch)


def main(argv: list[str] | None = None) -> int:
    """``ds01q-slurm CMD ARGS``, or called as ``sbatch`` … through a link or wrapper of that name."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if argv is None else "ds01q-slurm"
    if prog in SHIMS:
        return run(prog, args)
    if not args:
        click.echo(f"usage: ds01q-slurm {{{','.join(SHIMS)}}} [ARGS...]", err=True)
        return 2
    return run(args[0], args[1:])


def install(directory: str, force: bool = False) -> list[str]:
    """Write ``sbatch`` … wrappers into ``directory``; a file there that is not one of ours is left alone unless
    ``force``. Returns the paths written."""
    entry = os.path.join(os.path.dirname(sys.executable), "ds01q-slurm")
    if not os.path.exists(entry):
        entry = f"{sys.executable} -m ds01q.cli.slurm_shims"
    written = []
    os.makedirs(directory, exist_ok=True)
    for name in SHIMS:
        path = os.path.join(directory, name)
        if os.path.lexists(path) and not force:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    ours = MARK in f.read(4096)
            except OSError:
                ours = False
            if not ours:
                raise RequestError(f"{path} exists and is not a ds01q shim (a real Slurm?); use --force to replace it")
        tmp = path + ".ds01q-tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"#!/bin/sh\n{MARK}: Slurm's {name} mapped to ds01q\nexec {entry} {name} \"$@\"\n")
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    sys.exit(main())
