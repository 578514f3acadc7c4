"""`ds01q agent --node NAME`: run one node's agent (multi-node clusters, dispatch.kind: rq)."""
from __future__ import annotations

import click


@click.command()
@click.option("--node", required=True, help="This node's name (letters, digits, '.', '_', '-').")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def agent(ctx: click.Context, node: str, log_level: str) -> None:
    """Run this node's agent in the foreground: an RQ worker on queue ds01q:node:NODE.

    \b
    Examples:
      ds01q agent --node gpu-node-2  # see docs/DEPLOY.md
    """
    from ds01q.daemon.agent import run

    run(ctx.obj["config"], node, log_level)
