"""`--help` of the commands issue 13 added or changed, against snapshots (tests/fixtures/help/*.txt), each with
examples; `--version`; shell completion for bash, zsh and fish. Regenerate the snapshots after a deliberate
change with ``DS01Q_UPDATE_HELP=1 pytest tests/unit/test_cli_help.py``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ds01q import __version__
from ds01q.cli.main import cli

SNAPSHOTS = Path(__file__).resolve().parents[1] / "fixtures" / "help"
COMMANDS = ["submit", "queue", "hold", "release", "install-shims", "completion", "top"]


def help_text(*args: str) -> str:
    r = CliRunner().invoke(cli, [*args, "--help"], prog_name="ds01q", terminal_width=100)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_matches_its_snapshot_and_has_examples(command: str) -> None:
    text = help_text(command)
    path = SNAPSHOTS / f"{command}.txt"
    if os.environ.get("DS01Q_UPDATE_HELP"):
        path.write_text(text)
    assert text == path.read_text()
    assert "Examples:" in text and f"ds01q {command}" in text


def test_every_command_is_listed_in_the_top_level_help() -> None:
    text = help_text()
    for command in COMMANDS:
        assert f"  {command} " in text


def test_version() -> None:
    r = CliRunner().invoke(cli, ["--version"], prog_name="ds01q")
    assert r.exit_code == 0 and r.output == f"ds01q, version {__version__}\n"


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o nosort -F _ds01q_completion ds01q"),
                                           ("zsh", "compdef _ds01q_completion ds01q"),
                                           ("fish", "complete --no-files --command ds01q")])
def test_completion_scripts(shell: str, marker: str) -> None:
    r = CliRunner().invoke(cli, ["completion", shell], prog_name="ds01q")
    assert r.exit_code == 0 and marker in r.output and "_DS01Q_COMPLETE" in r.output


def test_completion_answers_for_commands_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    def complete(words: str, cword: int) -> str:
        env = {"COMP_WORDS": words, "COMP_CWORD": str(cword), "_DS01Q_COMPLETE": "bash_complete"}
        r = CliRunner().invoke(cli, [], prog_name="ds01q", env=env)
        return r.output

    assert "plain,submit" in complete("ds01q sub", 1).splitlines()
    assert "plain,--dependency" in complete("ds01q submit --dep", 2).splitlines()
