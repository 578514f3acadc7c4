"""One place that turns any error of a command into one line on stderr and an exit code."""
from __future__ import annotations

from typing import Callable

import click

from ds01q.errors import Ds01qError


def one_line_errors(prog: str, run: Callable[[], int]) -> int:
    """Call ``run``; a click usage error exits 2, a ds01q error 1, Ctrl-C 130, a closed pipe 0,
    each with at most one line on stderr prefixed by ``prog``, never a traceback."""
    try:
        return run()
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        click.echo(f"{prog}: aborted", err=True)
        return 130
    except click.ClickException as e:
        click.echo(f"{prog}: error: {e.format_message()}".splitlines()[0], err=True)
        return 2
    except Ds01qError as e:
        click.echo(f"{prog}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
