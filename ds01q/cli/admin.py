"""`ds01q admin …`: priorities, holds, drains, inventory, database."""
from __future__ import annotations

from typing import Any

import click

from ds01q.cli import output
from ds01q.cli.lazy import LazyGroup
from ds01q.client.api import Client


def _c(ctx: click.Context) -> Client:
    return Client(config=ctx.find_root().obj.get("config"))


@click.group(cls=LazyGroup, lazy={"accounting": "ds01q.cli.report:accounting"})
def admin() -> None:
    """Admin commands (members of an admin group only)."""


@admin.command()
@click.argument("job_id", type=int)
@click.argument("boost", type=int)
@click.pass_context
def priority(ctx: click.Context, job_id: int, boost: int) -> None:
    """Set an admin priority boost for a job.

    \b
    Examples:
      ds01q admin priority 42 500   # boost job 42
      ds01q admin priority 42 0     # undo
    """
    with _c(ctx) as c:
        r = c.call("admin.priority", id=job_id, boost=boost)
    click.echo(f"job {r['id']}: boost {r['boost']}")


def _states(ctx: click.Context, op: str, job_ids: tuple[int, ...]) -> None:
    with _c(ctx) as c:
        for r in c.call(op, ids=list(job_ids)):
            click.echo(f"job {r['id']}: {r['state']}")


@admin.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.pass_context
def hold(ctx: click.Context, job_ids: tuple[int, ...]) -> None:
    """Hold pending jobs.

    \b
    Examples:
      ds01q admin hold 42 43        # only an admin releases them
    """
    _states(ctx, "admin.hold", job_ids)


@admin.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.pass_context
def release(ctx: click.Context, job_ids: tuple[int, ...]) -> None:
    """Release held jobs.

    \b
    Examples:
      ds01q admin release 42        # any hold, a user's or an admin's
    """
    _states(ctx, "admin.release", job_ids)


@admin.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.pass_context
def requeue(ctx: click.Context, job_ids: tuple[int, ...]) -> None:
    """Stop running jobs and put them back in the queue.

    \b
    Examples:
      ds01q admin requeue 42        # like scontrol requeue
    """
    _states(ctx, "admin.requeue", job_ids)


@admin.command()
@click.argument("uuid")
@click.option("--reason", default=None)
@click.pass_context
def drain(ctx: click.Context, uuid: str, reason: str | None) -> None:
    """Give a node, GPU or slice no new jobs (UUID: a node name, or a GPU/slice UUID).

    \b
    Examples:
      ds01q admin drain MIG-… --reason "re-cut"  # one slice
      ds01q admin drain gpu-node-2               # a whole node
    """
    with _c(ctx) as c:
        r = c.call("admin.drain", uuid=uuid, reason=reason)
    click.echo(f"{r['kind']} {r['uuid']}: drained")


@admin.command()
@click.argument("uuid")
@click.pass_context
def resume(ctx: click.Context, uuid: str) -> None:
    """Undo a drain.

    \b
    Examples:
      ds01q admin resume MIG-…
    """
    with _c(ctx) as c:
        r = c.call("admin.resume", uuid=uuid)
    click.echo(f"{r['kind']} {r['uuid']}: resumed")


@admin.group()
def inventory() -> None:
    """GPU inventory."""


@inventory.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def refresh(ctx: click.Context, as_json: bool) -> None:
    """Read the inventory again (static config or NVML) and reconcile.

    \b
    Examples:
      ds01q admin inventory refresh  # also on SIGHUP
    """
    with _c(ctx) as c:
        r: dict[str, Any] = c.call("admin.refresh")
    if as_json:
        output.emit_json(r)
        return
    click.echo(f"added {len(r['added'])}, removed {len(r['removed'])}, jobs hit {r['failed_jobs'] or 'none'}")


@admin.group()
def db() -> None:
    """Database schema."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Apply the Alembic migrations up to the newest.

    \b
    Examples:
      ds01q admin db upgrade        # the daemon also does it at start
    """
    from ds01q.daemon import build as daemon

    url = daemon.db_upgrade(ctx.find_root().obj.get("config"))
    click.echo(f"database at head: {url}")


@admin.group("config", cls=LazyGroup, lazy={"import-ds01": "ds01q.cli.importcmd:import_ds01"})
def config_group() -> None:
    """Config helpers."""


@admin.group()
def mig() -> None:
    """MIG layouts: plan from demand, apply through a drain."""


@mig.command("plan")
@click.option("--gpu", default=None, help="Only this GPU (UUID).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def mig_plan(ctx: click.Context, gpu: str | None, as_json: bool) -> None:
    """Compute a layout for each GPU from the pending and running requests.

    \b
    Examples:
      ds01q admin mig plan
      ds01q admin mig plan --gpu GPU-… --json
    """
    with _c(ctx) as c:
        plans = c.call("admin.mig.plan", gpu=gpu)
    if as_json:
        output.emit_json([{k: p[k] for k in ("gpu", "name", "layout", "commands")} for p in plans])
        return
    for p in plans:
        click.echo(f"{p['name']} {p['gpu']}: {' + '.join(p['layout'])}")
        if not p["changes"]:
            click.echo("  already in this layout")
            continue
        part = p.get("partial")
        if part and not part["full_drain"]:
            click.echo(f"  partial re-cut, running jobs keep their slices; stay: {', '.join(part['keep']) or 'none'}")
            for cmd in part["commands"]:
                click.echo(f"  {cmd}")
            continue
        if part:
            click.echo(f"  whole-GPU drain: {part['why']}")
        cost = p["running_jobs"]
        click.echo(f"  cost: {'jobs to wait for or requeue: ' + ', '.join(map(str, cost)) if cost else 'none (idle)'}")
        for cmd in p["commands"]:
            click.echo(f"  {cmd}")


@mig.command("apply")
@click.option("--gpu", required=True, help="GPU UUID.")
@click.option("--force", is_flag=True, help="Requeue the GPU's running jobs instead of waiting for them.")
@click.option("--dry-run", is_flag=True, help="Print the commands only.")
@click.option("--timeout", default="1h", show_default=True, help="How long to wait for running jobs.")
@click.option("--layout", default=None, help="Target layout, e.g. 2g.10gb,1g.5gb,1g.5gb (default: from demand).")
@click.option("--whole-gpu", is_flag=True, help="Drain the whole GPU even when busy instances could stay.")
@click.pass_context
def mig_apply(ctx: click.Context, gpu: str, force: bool, dry_run: bool, timeout: str, layout: str | None,
              whole_gpu: bool) -> None:
    """Re-cut only free instances when the running ones can stay; otherwise drain the GPU, wait for
    (or requeue) its jobs, re-cut it, re-read the inventory, resume.

    \b
    Examples:
      ds01q admin mig apply --gpu GPU-… --dry-run                         # what it would do
      ds01q admin mig apply --gpu GPU-… --layout 3g.20gb,2g.10gb,2g.10gb
    """
    with Client(config=ctx.find_root().obj.get("config"), timeout=24 * 3600) as c:
        r = c.call("admin.mig.apply", gpu=gpu, force=force, dry_run=dry_run, timeout=timeout, layout=layout,
                   whole_gpu=whole_gpu)
    if r.get("whole_gpu"):
        click.echo(r["whole_gpu"], err=True)
    elif r.get("partial"):
        keep = r["partial"].get("keep", [])
        click.echo(f"partial re-cut: {len(keep)} instance(s) stay" + (f" ({', '.join(keep)})" if keep else ""),
                   err=True)
    for cmd in r["commands"]:
        click.echo(cmd)
    if r["applied"]:
        click.echo(f"applied: {' + '.join(r['layout'])}")
    elif not r["commands"]:
        click.echo("already in this layout")


@admin.command()
@click.option("--user", "-u", default=None, help="Only this user's requests.")
@click.option("--op", default=None, help="Only this operation (submit, cancel, admin.hold ...).")
@click.option("--since", default=None, help="Only this window, e.g. 2d.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit(ctx: click.Context, user: str | None, op: str | None, since: str | None, limit: int,
          as_json: bool) -> None:
    """Every state-changing request: who, what, on what, the result (newest first).

    \b
    Examples:
      ds01q admin audit             # newest first
      ds01q admin audit --json
    """
    with _c(ctx) as c:
        rows = c.call("admin.audit", user=user, operation=op, since=since, limit=limit)
    if as_json:
        output.emit_json(rows)
        return
    output.table(["ID", "AT", "USER", "OP", "TARGET", "RESULT"],
                 [[r["id"], output.short_time(r["at"]), r["user"], r["op"], r["target"] or "-", r["result"][:60]]
                  for r in rows])
