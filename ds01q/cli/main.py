"""`ds01q` command line: parse, call ds01q.Client, hand the result to cli.output."""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from ds01q.cli import output
from ds01q.cli.entry import one_line_errors
from ds01q.cli.lazy import LazyGroup
from ds01q.cli.options import request_from, request_options, slurm_options
from ds01q.client.api import EXIT_BY_STATE, Client
from ds01q import __version__
from ds01q.errors import ServerUnavailable



def client(ctx: click.Context) -> Client:
    return Client(config=ctx.obj.get("config"))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, lazy={
    "admin": "ds01q.cli.admin:admin",
    "agent": "ds01q.cli.agent:agent",
    "report": "ds01q.cli.report:report",
    "simulate": "ds01q.cli.simulate:simulate",
    "shell": "ds01q.cli.shell:shell",
    "attach": "ds01q.cli.shell:attach",
    "top": "ds01q.cli.top:top",
})
@click.option("--config", "config_path", envvar="DS01Q_CONFIG", default=None,
              help="Config file (default /etc/ds01q/ds01q.yaml).")
@click.version_option(__version__, "--version", "-V", prog_name="ds01q")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """ds01q: a fair queue for shared GPU servers."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


@cli.command()
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port.")
@click.pass_context
def server(ctx: click.Context, log_level: str, metrics_port: int | None) -> None:
    """Run the daemon in the foreground.

    \b
    Examples:
      ds01q server                      # as root; systemd runs it (config/ds01q.service)
      ds01q server --metrics-port 9101  # with the Prometheus exporter
    """
    from ds01q.daemon import build as daemon

    daemon.run(ctx.obj["config"], log_level, metrics_port)


@cli.command(context_settings={"ignore_unknown_options": False, "allow_interspersed_args": False})
@request_options
@click.option("--wait", is_flag=True, help="Block until the job ends; exit with its exit code.")
@click.option("--parsable", is_flag=True, help="Print only the job id.")
@click.option("--output", "-o", help="Output file name in the submit directory (%j = job id, %x name, %A_%a array).")
@click.option("--hold", "-H", is_flag=True, default=None, help="Submit held (you, or an admin, release it).")
@slurm_options
@click.option("--dry-run", is_flag=True, help="Check everything and print the job that would be queued; queue nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the job as JSON (show --json's shape).")
@click.argument("script")
@click.argument("args", nargs=-1)
@click.pass_context
def submit(ctx: click.Context, script: str, args: tuple[str, ...], wait: bool, parsable: bool, dry_run: bool,
           as_json: bool, **kw: Any) -> None:
    """Queue a batch job and print its id.

    #SBATCH and #DS01Q lines in SCRIPT are read as sbatch reads them; options given here override them.

    \b
    Examples:
      ds01q submit train.sh
      ds01q submit --mig 2g.10gb --time 2h train.sh --epochs 10
      ds01q submit --array 0-99%4 sweep.sh
      ds01q submit --dependency afterok:42 eval.sh
      ds01q submit --dry-run --json train.sh
    """
    with client(ctx) as c:
        if dry_run:
            job = c.dry_run(script, args, **request_from(kw))
            for w in job.get("warnings") or []:
                click.echo(f"ds01q: warning: {w}", err=True)
            output.emit_json(job) if as_json else output.job_detail(job)
            return
        job_id = c.submit(script, args, **request_from(kw))
        for w in c.last_warnings:
            click.echo(f"ds01q: warning: {w}", err=True)
        array = c.last_result.get("array")
        if parsable:
            click.echo(str(job_id))
        elif array:
            click.echo(f"Submitted batch job {job_id} (array of {array['tasks']} tasks)")
        else:
            click.echo(f"Submitted batch job {job_id}")
        if wait:
            ctx.exit(_exit_code(_wait_for_end(c, job_id)))


def _wait_for_end(c: Client, job_id: int, every_s: float = 1.0) -> dict[str, Any]:
    """Wait until the job ends, with a spinner (state, position, reason, estimated start) on a terminal and a
    plain line on stderr at each change otherwise. Between two looks the daemon waits (``Client.wait_states``),
    answering at once when the job ends."""
    from ds01q.cli.shell import _Progress, wait_line
    from ds01q.client.api import FINAL

    with _Progress() as progress:
        while True:
            job = c.show_surviving_restart(job_id)  # a daemon restart does not end the wait
            if job["state"] in FINAL:
                return job
            if job["state"] in ("RUNNING", "STOPPING"):
                where = ", ".join(job.get("slices") or []) or "CPU only"
                progress.update(f"job {job_id} {job['state']} on {where} (Ctrl-C stops waiting)")
            else:
                try:
                    queue = c.queue() if job["state"] == "PENDING" else []
                except ServerUnavailable:
                    queue = []
                progress.update(wait_line(job, queue, withdraw=False))
            c.wait_states([job_id], timeout=every_s)


def _exit_code(job: dict[str, Any]) -> int:
    if job["state"] in ("COMPLETED", "FAILED") and job.get("exit_code") is not None:
        return int(job["exit_code"]) & 0xFF
    return EXIT_BY_STATE.get(job["state"], 0 if job["state"] == "COMPLETED" else 1)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--long", "-l", is_flag=True, help="Show priority and its factors (like sprio).")
@click.option("--start", is_flag=True, help="Show estimated start times.")
@click.option("--user", "-u", default=None)
@click.option("--me", is_flag=True, help="Only my jobs.")
@click.option("--array", "-r", "expand", is_flag=True, help="One line per array task (default: one per array).")
@click.pass_context
def queue(ctx: click.Context, as_json: bool, long: bool, start: bool, user: str | None, me: bool,
          expand: bool) -> None:
    """Pending and running jobs, in priority order.

    \b
    Examples:
      ds01q queue                  # an array's pending tasks on one line: 42_[3-99%4]
      ds01q queue -r --me          # my jobs, one line per array task
      ds01q queue --long --start   # priorities and estimated starts
      ds01q queue --json
    """
    from ds01q.cli.arrays_view import collapse, label

    import pwd

    if me:
        user = pwd.getpwuid(os.getuid()).pw_name
    with client(ctx) as c:
        jobs = c.queue(user)
    if as_json:
        output.emit_json(jobs)
    else:
        output.job_rows([{**j, "label": label(j)} for j in jobs] if expand else collapse(jobs), long=long,
                        start=start)


@cli.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, job_id: int, as_json: bool) -> None:
    """One job: state, reason, request, slices and events.

    \b
    Examples:
      ds01q show 42                 # why it waits, its events
      ds01q show 42 --json
    """
    with client(ctx) as c:
        job = c.show(job_id)
    output.emit_json(job) if as_json else output.job_detail(job)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--user", "-u", default=None)
@click.option("--state", "-s", "states", multiple=True, help="Filter by state (repeatable).")
@click.option("--since", default=None, help="Only jobs submitted in this window, e.g. 2d.")
@click.option("--limit", type=int, default=1000)
@click.option("--all-users", "-a", is_flag=True, help="Everyone's jobs (admins).")
@click.option("--format", "-o", "fields", default=None,
              help="Comma-separated columns, e.g. id,user,state,wall_s,gpu_equiv_s,cpu_s,max_rss_bytes.")
@click.pass_context
def history(ctx: click.Context, as_json: bool, user: str | None, states: tuple[str, ...], since: str | None,
            limit: int, all_users: bool, fields: str | None) -> None:
    """Finished jobs with their usage (like sacct).

    \b
    Examples:
      ds01q history
      ds01q history --format id,user,state,wall_s,gpu_equiv_s  # like sacct --format
    """
    with client(ctx) as c:
        jobs = c.history(user=user, states=list(states) or None, since=since, limit=limit, all_users=all_users)
    if as_json:
        output.emit_json(jobs)
        return
    if fields:
        cols = [f.strip() for f in fields.split(",") if f.strip()]
        known = set(jobs[0]) if jobs else set(output.HISTORY_FIELDS)
        bad = [f for f in cols if f not in known and f not in output.HISTORY_FIELDS]
        if bad:
            raise click.UsageError(f"--format {bad[0]!r} is not a field (allowed: {', '.join(output.HISTORY_FIELDS)})")
        output.table([f.upper() for f in cols], [[output.cell(j.get(f)) for f in cols] for j in jobs])
        return
    output.table(["JOBID", "NAME", "USER", "STATE", "EXIT", "REQ", "ELAPSED", "SUBMITTED"],
                 [[j["id"], j["name"][:20], j["user"], j["state"], "-" if j["exit_code"] is None else j["exit_code"],
                   output.request_text(j["request"]), output.elapsed(j), output.short_time(j["submitted_at"])]
                  for j in jobs])


@cli.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.pass_context
def cancel(ctx: click.Context, job_ids: tuple[int, ...]) -> None:
    """Cancel jobs (pending ones at once, running ones are stopped).

    \b
    Examples:
      ds01q cancel 42
      ds01q cancel 42 43 44
      ds01q cancel 40               # an array's id: every task
    """
    with client(ctx) as c:
        for r in c.cancel(*job_ids):
            click.echo(f"job {r['id']}: {'stopping' if r['cancel_requested'] else r['state']}")


@cli.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.pass_context
def hold(ctx: click.Context, job_ids: tuple[int, ...]) -> None:
    """Hold your pending jobs (an array's id holds all its tasks); `ds01q release` lets them run.

    \b
    Examples:
      ds01q hold 42 43
      ds01q release 42
    """
    with client(ctx) as c:
        for r in c.hold(*job_ids):
            click.echo(f"job {r['id']}: {r['state']}")


@cli.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.pass_context
def release(ctx: click.Context, job_ids: tuple[int, ...]) -> None:
    """Release your held jobs (a job an admin held only an admin releases).

    \b
    Examples:
      ds01q release 42             # 42 an array's id: all its held tasks
    """
    with client(ctx) as c:
        for r in c.release(*job_ids):
            click.echo(f"job {r['id']}: {r['state']}")


@cli.command()
@click.argument("job_id", type=int)
@click.option("--follow", "-f", is_flag=True)
@click.option("--err", "error", is_flag=True, help="The --error file (stderr) instead; the output file if none.")
@click.pass_context
def logs(ctx: click.Context, job_id: int, follow: bool, error: bool) -> None:
    """Print a job's output file.

    \b
    Examples:
      ds01q logs -f 42             # follow until the job ends
      ds01q logs --err 42          # its --error file
    """
    with client(ctx) as c:
        for chunk in c.logs(job_id, follow=follow, error=error):
            click.echo(chunk, nl=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """GPUs and slices, drawn to scale, with who runs where.

    \b
    Examples:
      ds01q status
      ds01q status --json
    """
    with client(ctx) as c:
        st = c.status()
    output.emit_json(st) if as_json else output.status_view(st)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--user", "-u", default=None)
@click.pass_context
def limits(ctx: click.Context, as_json: bool, user: str | None) -> None:
    """My group, its limits and my current use.

    \b
    Examples:
      ds01q limits
      ds01q limits --json
    """
    with client(ctx) as c:
        r = c.limits(user)
    if as_json:
        output.emit_json(r)
        return
    click.echo(f"user {r['user']}  group {r['group']}  priority {r['priority']}  admin {r['admin']}")
    for k, v in r["limits"].items():
        click.echo(f"  {k:<20} {'unlimited' if v is None else v}")
    click.echo("  in use: " + ", ".join(f"{k} {v}" for k, v in r["use"].items()))


@cli.command("install-shims")
@click.option("--dir", "directory", default="/usr/local/bin", show_default=True,
              help="Where to write sbatch, squeue, scancel, sacct, srun and salloc.")
@click.option("--force", is_flag=True, help="Replace files there that are not ds01q shims (e.g. a real Slurm).")
def install_shims(directory: str, force: bool) -> None:
    """Install Slurm's commands as aliases of ds01q (optional).

    \b
    Examples:
      ds01q install-shims                      # as root: for every user
      ds01q install-shims --dir ~/.local/bin   # just for you
    """
    from ds01q.cli.slurm_shims import install

    for path in install(os.path.expanduser(directory), force=force):
        click.echo(f"installed {path}")


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    \b
    Examples:
      eval "$(ds01q completion bash)"                             # in ~/.bashrc
      ds01q completion zsh > "${fpath[1]}/_ds01q"
      ds01q completion fish > ~/.config/fish/completions/ds01q.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "ds01q", "_DS01Q_COMPLETE").source())


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, never a traceback."""
    return one_line_errors("ds01q", lambda: int(cli.main(args=argv, prog_name="ds01q", standalone_mode=False) or 0))


if __name__ == "__main__":
    sys.exit(main())
