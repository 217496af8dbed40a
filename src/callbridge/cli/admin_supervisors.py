"""`callbridge admin supervisor create|list|update|reset-password|delete`: the accounts of the supervisor's board
(`/supervisor`), one operation each (storage/supervisors.py).

    callbridge admin supervisor create 0042 maria --name "María"     (asks for the password)
    callbridge admin supervisor update 0042 maria --set name=Maria --set extension=1009
"""

from __future__ import annotations

from typing import Annotated

import typer

from callbridge.cli.admin import JSON_OPTION, admin_app, run_in_database, show_rows
from callbridge.cli.admin_changes import SET_OPTION, parse_changes
from callbridge.storage import supervisors as sv

supervisor_app = typer.Typer(no_args_is_help=True, help="Supervisors of an operation (the board at /supervisor).")
admin_app.add_typer(supervisor_app, name="supervisor")

PASSWORD_OPTION = typer.Option(..., "--password", prompt=True, hide_input=True, confirmation_prompt=True,
                               help="The board password (8+ characters; stored as a salted scrypt hash).")


@supervisor_app.command("create")
def supervisor_create(ctx: typer.Context, operation_id: str, username: str,
                      name: str = typer.Option("", "--name", help="Display name."),
                      extension: str = typer.Option("", "--extension",
                                                    help="The phone the board's Listen rings (an agent's extension)."),
                      password: str = PASSWORD_OPTION) -> None:
    """Create a supervisor: signs in to the operation's board and sees that operation only."""
    run_in_database(ctx, lambda c: sv.create_supervisor(c, operation_id, username, password, name=name,
                                                        extension=extension))
    typer.echo(f"supervisor {username} created in operation {operation_id}")


@supervisor_app.command("list")
def supervisor_list(ctx: typer.Context, operation_id: str, as_json: bool = JSON_OPTION) -> None:
    """List an operation's supervisors (never their password hashes)."""
    show_rows(run_in_database(ctx, lambda c: sv.list_supervisors(c, operation_id)), ["username", "name", "extension"],
              as_json, f"supervisors of {operation_id}")


@supervisor_app.command("update")
def supervisor_update(ctx: typer.Context, operation_id: str, username: str,
                      set_: Annotated[list[str], SET_OPTION]) -> None:
    """Change a supervisor's name or extension (the password: `reset-password`)."""
    run_in_database(ctx, lambda c: sv.update_supervisor(c, operation_id, username, **parse_changes(set_)))
    typer.echo(f"supervisor {username} of operation {operation_id} updated")


@supervisor_app.command("reset-password")
def supervisor_reset_password(ctx: typer.Context, operation_id: str, username: str,
                              password: str = PASSWORD_OPTION) -> None:
    run_in_database(ctx, lambda c: sv.reset_supervisor_password(c, operation_id, username, password))
    typer.echo(f"supervisor {username} of operation {operation_id}: password reset")


@supervisor_app.command("delete")
def supervisor_delete(ctx: typer.Context, operation_id: str, username: str) -> None:
    run_in_database(ctx, lambda c: sv.delete_supervisor(c, operation_id, username))
    typer.echo(f"supervisor {username} of operation {operation_id} deleted")
