"""The `callbridge` command line."""

from __future__ import annotations

import typer

from callbridge import __version__
from callbridge.admin import admin_app
from callbridge.cli_agent import agent_app
from callbridge.cli_live import live_app
from callbridge.demo import demo_command
from callbridge.serve import serve_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help="callbridge: contact-center call control")
app.add_typer(admin_app, name="admin")
app.add_typer(agent_app, name="agent")
app.add_typer(live_app)
app.command("serve")(serve_command)
app.command("demo")(demo_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"callbridge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """callbridge: contact-center call control over SIP, with the Wolkvox agentbox API."""


def main() -> None:
    app()
