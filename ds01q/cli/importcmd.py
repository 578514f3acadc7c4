"""`ds01q admin config import-ds01 FILE`: print a ds01-infra resource-limits.yaml as ds01q config.

Runs locally (no daemon): it reads FILE and the ds01-infra files beside it (groups/*.members,
group-overrides.txt, user-overrides.yaml, lifecycle-exemptions.yaml) and prints the
equivalent ds01q YAML, headed by a comment listing which keys mapped and which were ignored.
"""
from __future__ import annotations

from pathlib import Path

import click
import yaml

from ds01q.ds01infra import render
from ds01q.errors import ConfigError


def _load(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict) or "defaults" not in data or not isinstance(data.get("groups"), dict):
        raise ConfigError(f"{path}: not a ds01-infra resource-limits.yaml (needs top-level defaults: and groups:)")
    return data


@click.command("import-ds01")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def import_ds01(file: Path) -> None:
    """Print FILE (ds01-infra's resource-limits.yaml) as the equivalent ds01q config."""
    data = _load(file)
    try:
        text = render(data, file.parent, source=str(file))
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None
    click.echo(text, nl=False)
