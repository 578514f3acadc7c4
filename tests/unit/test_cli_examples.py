"""Every command's ``--help`` has examples (``ds01q help`` is the manual: there are no separate man pages),
and every example parses: its options exist and its values have the right types."""
from __future__ import annotations

import shlex
from collections.abc import Iterator

import click
import pytest

from ds01q.cli.main import cli



def commands() -> Iterator[tuple[str, click.Command]]:
    def walk(group: click.Group, prefix: list[str], ctx: click.Context) -> Iterator[tuple[str, click.Command]]:
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None
            if isinstance(cmd, click.Group):
                yield from walk(cmd, [*prefix, name], click.Context(cmd, parent=ctx))
            else:
                yield " ".join([*prefix, name]), cmd

    yield from walk(cli, [], click.Context(cli))


def examples(cmd: click.Command) -> list[list[str]]:
    text = cmd.help or ""
    if "Examples:" not in text:
        return []
    out = []
    for line in text.split("Examples:", 1)[1].splitlines():
        line = line.split("  #", 1)[0].strip()
        if line.startswith("ds01q "):
            line = line.split(" > ", 1)[0].split(" | ", 1)[0]
            out.append(shlex.split(line.replace('"$(', "X").replace("$(", "X"))[1:])
    return out


def parse(args: list[str]) -> click.Command:
    """Parse ``ds01q ARGS`` down to the command, as click would, without running it."""
    cmd: click.Command = cli
    ctx = cli.make_context("ds01q", list(args))
    while isinstance(cmd, click.Group):
        name, sub, rest = cmd.resolve_command(ctx, [*ctx.protected_args, *ctx.args])
        assert sub is not None, args
        ctx = sub.make_context(name or "", rest, parent=ctx)
        cmd = sub
    return cmd


ALL = sorted(commands(), key=lambda c: c[0])


@pytest.mark.parametrize("name,cmd", ALL, ids=[n for n, _ in ALL])
def test_every_command_has_examples_that_parse(name: str, cmd: click.Command) -> None:
    found = examples(cmd)
    assert found, f"ds01q {name} --help has no examples"
    parsed = [parse(args) for args in found]  # an example may show a related command too (hold, then release)
    assert cmd in parsed, (name, found)
