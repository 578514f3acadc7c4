"""`ds01q admin config import-ds01 FILE`: print a ds01-infra resource-limits.yaml as ds01q config.

Runs locally (no daemon): it reads FILE and the ds01-infra files beside it (groups/*.members,
group-overrides.txt, user-overrides.yaml, lifecycle-exemptions.yaml) and prints the
equivalent ds01q YAML, headed by a comment listing which keys mapped and which were ignored.
"""
from __future__ import annotations

from pathlib import Path

import click

from ds01q.ds01infra.importer import render
from ds01q.config import read_yaml
from ds01q.errors import ConfigError


def _load(path: Path) -> dict:
    data = read_yaml(path)
    if not isinstance(data, dict) or "defaults" not in data or not isinstance(data.get("groups"), dict):
        raise ConfigError(f"{path}: not a ds01-infra resource-limits.yaml (needs top-level defaults: and groups:)")
    return data


@click.command("import-ds01")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def import_ds01(file: Path) -> None:
    """Print FILE (ds01-infra's resource-limits.yaml) as the equivalent ds01q config.

    \b
    Examples:
      ds01q admin config import-ds01 /opt/ds01-infra/config/resource-limits.yaml > ds01q.yaml
    """
    data = _load(file)
    try:
        text = render(data, file.parent, source=str(file))
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None
    click.echo(text, nl=False)
