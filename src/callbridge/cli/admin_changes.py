"""`callbridge admin`: changing what it made. Update and delete for every object, an agent's password reset, token
rotation, `apply FILE` (the database made to match an operation file, `--dry-run` to see the plan) and the
webhooks' delivery status.

Every change is one transaction; a refusal (a delete that would orphan live work, a value create would refuse, a
thing that does not exist or belongs to another operation) is one line on stderr and exit status 1, and changes
nothing. A running node picks each change up at its next directory poll.

`update` takes `--set FIELD=VALUE` (repeatable), VALUE read as a TOML value when it parses as one
(`--set max_wait_seconds=90`, `--set 'queues=["support", "sales"]'`) and as text otherwise (`--set name=Ana`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from callbridge.cli.admin import (
    JSON_OPTION,
    activity_app,
    admin_app,
    agent_app,
    aux_app,
    did_app,
    fail,
    operation_app,
    queue_app,
    run_in_database,
    show_rows,
    token_app,
    trunk_app,
    webhook_app,
)
from callbridge.storage import admin_apply
from callbridge.storage import admin_changes as chg
from callbridge.storage.administration import AdminError
from callbridge.storage.database import make_engine
from callbridge.storage.migrate import upgrade
from callbridge.storage.webhook_cursors import webhook_status

SET_OPTION = typer.Option(..., "--set", help="FIELD=VALUE to change (repeatable); VALUE in TOML or plain text.")


def parse_changes(pairs: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for pair in pairs:
        field, sep, raw = pair.partition("=")
        if not sep or not field.strip():
            fail(f"--set {pair!r}: use FIELD=VALUE")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        changes[field.strip()] = value
    return changes


# --- update ------------------------------------------------------------------------------------------------------

@operation_app.command("update")
def operation_update(ctx: typer.Context, operation_id: str, set_: Annotated[list[str], SET_OPTION]) -> None:
    """Change an operation's fields (name, sip_domain, realm, acw_seconds, ring_timeout, ...)."""
    run_in_database(ctx, lambda c: chg.update_operation(c, operation_id, **parse_changes(set_)))
    typer.echo(f"operation {operation_id} updated")


@queue_app.command("update")
def queue_update(ctx: typer.Context, operation_id: str, name: str, set_: Annotated[list[str], SET_OPTION]) -> None:
    run_in_database(ctx, lambda c: chg.update_queue(c, operation_id, name, **parse_changes(set_)))
    typer.echo(f"queue {name} of operation {operation_id} updated")


@agent_app.command("update")
def agent_update(ctx: typer.Context, operation_id: str, extension: str,
                 set_: Annotated[list[str], SET_OPTION]) -> None:
    """Change an agent's name or queues (its password: `reset-password`)."""
    run_in_database(ctx, lambda c: chg.update_agent(c, operation_id, extension, **parse_changes(set_)))
    typer.echo(f"agent {extension} of operation {operation_id} updated")


@agent_app.command("reset-password")
def agent_reset_password(
    ctx: typer.Context, operation_id: str, extension: str,
    password: str = typer.Option(..., "--password", prompt=True, hide_input=True, confirmation_prompt=True,
                                 help="The new SIP password (stored as HA1 digests only)."),
) -> None:
    run_in_database(ctx, lambda c: chg.reset_agent_password(c, operation_id, extension, password))
    typer.echo(f"agent {extension} of operation {operation_id}: password reset")


@trunk_app.command("update")
def trunk_update(ctx: typer.Context, operation_id: str, name: str, set_: Annotated[list[str], SET_OPTION]) -> None:
    run_in_database(ctx, lambda c: chg.update_trunk(c, operation_id, name, **parse_changes(set_)))
    typer.echo(f"trunk {name} of operation {operation_id} updated")


@did_app.command("update")
def did_update(ctx: typer.Context, operation_id: str, number: str, set_: Annotated[list[str], SET_OPTION]) -> None:
    run_in_database(ctx, lambda c: chg.update_did(c, operation_id, number, **parse_changes(set_)))
    typer.echo(f"DID {number} of operation {operation_id} updated")


@aux_app.command("update")
def aux_update(ctx: typer.Context, operation_id: str, aux_id: str, name: str) -> None:
    run_in_database(ctx, lambda c: chg.update_aux_state(c, operation_id, aux_id, name=name))
    typer.echo(f"auxiliary state {aux_id} of operation {operation_id} updated")


@activity_app.command("update")
def activity_update(ctx: typer.Context, operation_id: str, group: int, code: str, name: str) -> None:
    run_in_database(ctx, lambda c: chg.update_activity_code(c, operation_id, group, code, name=name))
    typer.echo(f"activity code {group}/{code} of operation {operation_id} updated")


@token_app.command("update")
def token_update(ctx: typer.Context, operation_id: str, token_id: str,
                 set_: Annotated[list[str], SET_OPTION]) -> None:
    """Change a token's label, concurrency_limit or daily_quota."""
    run_in_database(ctx, lambda c: chg.update_token(c, operation_id, token_id, **parse_changes(set_)))
    typer.echo(f"token {token_id} of operation {operation_id} updated")


@token_app.command("rotate")
def token_rotate(ctx: typer.Context, operation_id: str, token_id: str) -> None:
    """A new secret for the token; the old one stops working at the nodes' next directory poll."""
    _token, plain = run_in_database(ctx, lambda c: chg.rotate_token(c, operation_id, token_id))
    typer.echo(f"token {token_id} rotated: {plain}")
    typer.echo("Keep the token now: only its hash is stored.", err=True)


# --- delete ------------------------------------------------------------------------------------------------------

@operation_app.command("delete")
def operation_delete(ctx: typer.Context, operation_id: str) -> None:
    run_in_database(ctx, lambda c: chg.delete_operation(c, operation_id))
    typer.echo(f"operation {operation_id} deleted")


@queue_app.command("delete")
def queue_delete(ctx: typer.Context, operation_id: str, name: str) -> None:
    run_in_database(ctx, lambda c: chg.delete_queue(c, operation_id, name))
    typer.echo(f"queue {name} of operation {operation_id} deleted")


@agent_app.command("delete")
def agent_delete(ctx: typer.Context, operation_id: str, extension: str) -> None:
    run_in_database(ctx, lambda c: chg.delete_agent(c, operation_id, extension))
    typer.echo(f"agent {extension} of operation {operation_id} deleted")


@trunk_app.command("delete")
def trunk_delete(ctx: typer.Context, operation_id: str, name: str) -> None:
    run_in_database(ctx, lambda c: chg.delete_trunk(c, operation_id, name))
    typer.echo(f"trunk {name} of operation {operation_id} deleted")


@did_app.command("delete")
def did_delete(ctx: typer.Context, operation_id: str, number: str) -> None:
    run_in_database(ctx, lambda c: chg.delete_did(c, operation_id, number))
    typer.echo(f"DID {number} of operation {operation_id} deleted")


@aux_app.command("delete")
def aux_delete(ctx: typer.Context, operation_id: str, aux_id: str) -> None:
    run_in_database(ctx, lambda c: chg.delete_aux_state(c, operation_id, aux_id))
    typer.echo(f"auxiliary state {aux_id} of operation {operation_id} deleted")


@activity_app.command("delete")
def activity_delete(ctx: typer.Context, operation_id: str, group: int, code: str) -> None:
    run_in_database(ctx, lambda c: chg.delete_activity_code(c, operation_id, group, code))
    typer.echo(f"activity code {group}/{code} of operation {operation_id} deleted")


@token_app.command("delete")
def token_delete(ctx: typer.Context, operation_id: str, token_id: str) -> None:
    run_in_database(ctx, lambda c: chg.delete_token(c, operation_id, token_id))
    typer.echo(f"token {token_id} of operation {operation_id} deleted")


# --- webhooks' delivery ------------------------------------------------------------------------------------------

@webhook_app.command("status")
def webhook_status_command(ctx: typer.Context, operation_id: str | None = typer.Argument(None),
                           as_json: bool = JSON_OPTION) -> None:
    """Each webhook's lag behind the event log: events not yet delivered, and the oldest one's age."""
    rows = run_in_database(ctx, lambda c: webhook_status(c, operation_id))
    show_rows(rows, ["webhook_id", "operation_id", "url", "last_seq", "cursor", "lag", "oldest_undelivered_age_s"],
              as_json, "webhook delivery")


# --- the whole operation from one file ---------------------------------------------------------------------------

@admin_app.command("apply")
def apply(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="The operation's TOML file.")],
          dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing.")) -> None:
    """Make the database match an operation file: create, update and delete what differs (same file twice:
    nothing changes). Secrets are never printed; a changed one shows as (changed)."""
    try:
        doc = admin_apply.read_operation_file(file)
        engine = make_engine(ctx.obj)
    except AdminError as exc:
        fail(str(exc))
    try:
        upgrade(engine)
        result = admin_apply.plan(engine, doc) if dry_run else admin_apply.execute(engine, doc)
    except AdminError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    lines = result.lines()
    for line in lines:
        typer.echo(line)
    if not lines:
        typer.echo(f"operation {result.operation_id}: nothing to change")
    elif dry_run:
        typer.echo(f"operation {result.operation_id}: {len(lines)} changes planned (dry run: nothing changed)")
    else:
        typer.echo(f"operation {result.operation_id}: {len(lines)} changes made")
    for token, plain in result.tokens:
        typer.echo(f"token {token.id} ({token.label or 'no label'}): {plain}")
