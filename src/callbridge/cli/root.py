"""The root of the `callbridge` command line: the app that mounts every command, and `main`, the installed script.

Bad input ends the same way everywhere: an unknown command, a bad or missing flag or argument prints one line on
stderr, ``error: ... (see 'callbridge serve --help')``, and exits 2; never a framed box or a traceback. The root
group and the commands mounted here use `common`'s one-line classes; `main` catches what the sub-apps mounted
from other modules still raise (Click's usage errors) and what a command lets through that says why it could not
start (an address in use), so the installed `callbridge` keeps that promise for every subcommand.
"""

from __future__ import annotations

import errno
import sys

import typer
from typer import Abort

try:  # Typer >= 0.22 carries its own copy of Click; before, TyperCommand is Click's
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # type: ignore[assignment]

from callbridge import __version__
from callbridge.cli import admin_changes as _registers_update_and_delete  # noqa: F401  (its commands join admin_app)
from callbridge.cli import admin_supervisors as _registers_supervisors  # noqa: F401  (its commands join admin_app)
from callbridge.cli import cdrs as _registers_calls_cdrs  # noqa: F401  (its command joins calls_app)
from callbridge.cli.admin import admin_app
from callbridge.cli.agent import agent_app
from callbridge.cli.cluster import cluster_app
from callbridge.cli.common import EXIT_OTHER, EXIT_USAGE, OneLineCommand, OneLineGroup, usage_line
from callbridge.cli.demo import demo_command
from callbridge.cli.live import calls_app, live_app
from callbridge.cli.serve import serve_command

app = typer.Typer(add_completion=False, no_args_is_help=True, cls=OneLineGroup,
                  help="callbridge: contact-center call control")
app.add_typer(admin_app, name="admin")
app.add_typer(agent_app, name="agent")
app.add_typer(cluster_app, name="cluster")
app.add_typer(live_app)
app.add_typer(calls_app, name="calls")
app.command("serve", cls=OneLineCommand)(serve_command)
app.command("demo", cls=OneLineCommand)(demo_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"callbridge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """callbridge: contact-center call control over SIP, with the Wolkvox agentbox API."""


_ADDRESS_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL})


def main() -> None:
    """The installed `callbridge`: the app, with every usage error as one line (exit 2)."""
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # the help has been printed already
        code = exc.exit_code
    except UsageError as exc:
        typer.echo(usage_line(exc), err=True)
        code = EXIT_USAGE
    except ClickException as exc:
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        code = exc.exit_code
    except Abort:
        typer.echo("error: aborted", err=True)
        code = EXIT_OTHER
    except OSError as exc:
        if exc.errno not in _ADDRESS_ERRORS:
            raise
        typer.echo(f"error: cannot start: {exc.strerror or exc}", err=True)
        code = EXIT_OTHER
    sys.exit(code if isinstance(code, int) else 0)
