"""`callbridge admin`: create and list operations, agents, tokens, trunks, DIDs, queues, auxiliary states,
activity codes and webhooks, or load a whole operation from one TOML file. No web UI yet; this is it.

The database is `--database-url`, else `$CALLBRIDGE_DATABASE_URL`, else `sqlite:///callbridge.db` in the working
directory; it is created and migrated on first use. Bad input prints one line on stderr (`error: ...`) and exits
with status 1; nothing is written. List commands print a table, or JSON with `--json`. Secrets are never printed:
agents' HA1 digests, trunks' passwords and webhooks' secrets are left out, and a token is shown once, when it is
created.

Examples:

    callbridge admin operation create 0042 --domain 0042.callbridge.test --name "Acme support"
    callbridge admin queue create 0042 support
    callbridge admin agent create 0042 1001 --name Ana --queue support        (asks for the password)
    callbridge admin token create 0042 --label crm                             (prints the token once)
    callbridge admin webhook add 0042 https://crm.example/callbridge --secret "$SECRET" --event call.ended
    callbridge admin webhook update 1 --url https://crm2.example/callbridge   (a running node follows at its poll)
    callbridge admin load docs/examples/operation.toml

## The operation file (`callbridge admin load FILE.toml`)

One file describes one operation; loading it is all or nothing. Sections and their keys (defaults in brackets):

    [operation]          id (the wolkvox_server, e.g. "0042"), sip_domain, name [""], realm [sip_domain],
                         time_zone ["UTC"], acw_seconds [0], after_transfer_state ["acw" | "ready"],
                         default_queue [none], ring_timeout [20], transfer_timeout [30], dial_timeout [45],
                         max_transfers [5], recent_call_window [600], action_timeout [5],
                         token_concurrency_limit [2], daily_quota [none], digest_algorithms [the node's
                         --digest-algorithms; else e.g. ["SHA-256"] or ["SHA-256", "MD5"], offered SHA-256 first],
                         media_mode ["anchored" | "direct"], media_relay_down ["direct" | "refuse"],
                         hold_music [built-in: a WAV file's path, converted once, at most 8 s, looped],
                         transfer_audio ["ringback" | "music"], ringback_tone ["etsi" | "us"],
                         recording ["never" | "always" | "on_demand"], recording_retention_days [none: kept]
    [[queues]]           name, max_wait_seconds [60], ring_timeout [the operation's], retry_after [60],
                         recording [the operation's: "never" | "always" | "on_demand"],
                         music [the operation's hold_music: a WAV file's path, at most 8 s, looped to callers
                         waiting], announcement [none: a WAV file, at most 8 s, played to callers waiting],
                         announcement_interval [30: seconds from one announcement's start to the next's, >= 5]
    [[agents]]           extension (digits), password (8+ characters; stored as HA1 only), name [""], queues [[]]
    [[aux_states]]       id (digits, what change_status names), name
    [[activity_codes]]   group (1 = cod_act, 2 = cod_act_2), code, name
    [[trunks]]           name, host (IP address), port [5060], transport ["udp" | "tcp"],
                         dial_patterns [[] = any number], dial_strip [0], dial_prefix [""], dial_min_length [3],
                         dial_max_length [20], caller_id_policy ["customer" | "agent" | "fixed"],
                         caller_id_number [""], register [false], username, password, auth_realm,
                         inbound_networks [[]] (CIDR networks the provider sends calls from),
                         dtmf_mode ["rfc4733" | "info"] (how api=dtmf reaches its customers)
    [[dids]]             number, queue, trunk [any trunk of the operation]
    [[tokens]]           label [""], concurrency_limit [the operation's], daily_quota [the operation's]
    [[webhooks]]         url (http or https, a host, no user:password@), secret (16-256 characters, stored as
                         given: it signs), events [[] = every event type; else e.g. ["call.ended"]]
    [[supervisors]]      username, password (8+ characters; stored as a salted scrypt hash), name [""],
                         extension [""] (the phone the board's Listen rings: an agent's extension)

Tokens listed in the file are generated while loading and printed once. `docs/examples/operation.toml` is a
complete example.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from callbridge.storage import administration as adm
from callbridge.storage.administration import AdminError
from callbridge.storage.database import DATABASE_URL_ENV, DEFAULT_DATABASE_URL, DatabaseUrlError, make_engine
from callbridge.storage.loader import load_operation
from callbridge.storage.migrate import upgrade
from callbridge.storage.webhooks import create_webhook, delete_webhook, list_webhooks, update_webhook

T = TypeVar("T")

admin_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Administer operations, agents, tokens, trunks, DIDs, queues, aux states, codes.")
operation_app = typer.Typer(no_args_is_help=True, help="Operations (tenants).")
agent_app = typer.Typer(no_args_is_help=True, help="Agents of an operation.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens of an operation.")
trunk_app = typer.Typer(no_args_is_help=True, help="SIP trunks of an operation.")
did_app = typer.Typer(no_args_is_help=True, help="DIDs (inbound numbers) of an operation.")
queue_app = typer.Typer(no_args_is_help=True, help="Queues of an operation.")
aux_app = typer.Typer(no_args_is_help=True, help="Auxiliary (not ready) states of an operation.")
activity_app = typer.Typer(no_args_is_help=True, help="Activity (disposition) codes of an operation.")
webhook_app = typer.Typer(no_args_is_help=True, help="Webhooks: where an operation's events are POSTed, signed.")
for _sub, _name in ((operation_app, "operation"), (agent_app, "agent"), (token_app, "token"),
                    (trunk_app, "trunk"), (did_app, "did"), (queue_app, "queue"), (aux_app, "aux"),
                    (activity_app, "activity"), (webhook_app, "webhook")):
    admin_app.add_typer(_sub, name=_name)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of a table.")


@admin_app.callback()
def _admin(
    ctx: typer.Context,
    database_url: str = typer.Option(DEFAULT_DATABASE_URL, "--database-url", envvar=DATABASE_URL_ENV,
                                     help="Database URL (sqlite:///FILE or postgresql://...)."),
) -> None:
    ctx.obj = database_url


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def run_in_database(ctx: typer.Context, action: Callable[[Connection], T]) -> T:
    """Run `action` in one transaction on the migrated database; any refusal is one line on stderr, exit 1."""
    url = ctx.obj
    try:
        engine = make_engine(url)
    except DatabaseUrlError as exc:
        fail(str(exc))
    try:
        upgrade(engine)
        with engine.begin() as conn:
            return action(conn)
    except AdminError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"database: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}")
    except OSError as exc:
        fail(f"database: {exc}")
    finally:
        engine.dispose()
    raise AssertionError("unreachable")


def _plain(value: Any) -> Any:
    data = dataclasses.asdict(value)
    for secret in ("ha1_md5", "ha1_sha256", "hash", "secret", "password_hash"):
        data.pop(secret, None)
    for audio in ("hold_music", "music", "announcement"):
        data.pop(audio, None)  # converted audio; its _name says which file it came from
    if data.get("credentials"):
        data["credentials"].pop("password", None)
    return data


def show_rows(rows: Sequence[Any], columns: Sequence[str], as_json: bool, title: str) -> None:
    plain = [_plain(r) for r in rows]
    if as_json:
        typer.echo(json.dumps(plain, indent=2, ensure_ascii=False))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in plain:
        table.add_row(*(_cell(row, c) for c in columns))
    Console(width=160).print(table)


def _cell(row: dict[str, Any], column: str) -> str:
    value: Any = row
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, list | tuple):
        return ", ".join(str(v.get("number", v)) if isinstance(v, dict) else str(v) for v in value)
    return "" if value is None else str(value)


# --- operations -------------------------------------------------------------------------------------------------


@operation_app.command("create")
def operation_create(
    ctx: typer.Context,
    operation_id: str = typer.Argument(..., help="The wolkvox_server code, e.g. 0042."),
    domain: str = typer.Option(..., "--domain", help="SIP domain agents register in (also the digest realm)."),
    name: str = typer.Option("", "--name"),
    realm: str = typer.Option("", "--realm", help="Digest realm, if not the domain."),
    time_zone: str = typer.Option("UTC", "--time-zone"),
    acw_seconds: float = typer.Option(0.0, "--acw-seconds", help="After-call work length."),
    after_transfer: str = typer.Option("acw", "--after-transfer", help="acw or ready."),
    default_queue: str | None = typer.Option(None, "--default-queue"),
    ring_timeout: float = typer.Option(20.0, "--ring-timeout"),
    transfer_timeout: float = typer.Option(30.0, "--transfer-timeout"),
    dial_timeout: float = typer.Option(45.0, "--dial-timeout", help="How long a dialled customer rings."),
    max_transfers: int = typer.Option(5, "--max-transfers"),
    token_concurrency_limit: int = typer.Option(2, "--token-concurrency-limit"),
    daily_quota: int | None = typer.Option(None, "--daily-quota"),
    media_mode: str = typer.Option("anchored", "--media-mode",
                                   help="anchored (through the rtpengine relay, when one is configured) or direct."),
    media_relay_down: str = typer.Option("direct", "--media-relay-down",
                                         help="When no relay answers at a call's start: direct (go on) or refuse."),
    hold_music: str = typer.Option("", "--hold-music",
                                   help="A WAV file played (looped) to held customers; converted once, at most 8 s. "
                                        "Default: the built-in music."),
    transfer_audio: str = typer.Option("ringback", "--transfer-audio",
                                       help="What a customer hears while a transfer target rings: ringback or music."),
    ringback_tone: str = typer.Option("etsi", "--ringback-tone", help="The ringback tone: etsi (425 Hz) or us."),
    recording: str = typer.Option("never", "--recording",
                                  help="Which calls are recorded: never, always or on_demand (through the API)."),
    recording_retention_days: int | None = typer.Option(None, "--recording-retention-days",
                                                        help="Days a recording is kept. Default: kept."),
    digest_algorithms: str = typer.Option(
        "", "--digest-algorithms",
        help="Digest algorithms offered to its phones: SHA-256, MD5 or both, comma-separated [the node's]."),
) -> None:
    """Create an operation."""
    op = run_in_database(ctx, lambda c: adm.create_operation(
        c, id=operation_id, sip_domain=domain, name=name, realm=realm, time_zone=time_zone,
        acw_seconds=acw_seconds, after_transfer_state=after_transfer, default_queue=default_queue,
        ring_timeout=ring_timeout, transfer_timeout=transfer_timeout, dial_timeout=dial_timeout,
        max_transfers=max_transfers, token_concurrency_limit=token_concurrency_limit, daily_quota=daily_quota,
        media_mode=media_mode, media_relay_down=media_relay_down, hold_music=hold_music,
        transfer_audio=transfer_audio, ringback_tone=ringback_tone, recording=recording,
        recording_retention_days=recording_retention_days,
        digest_algorithms=digest_algorithms))
    typer.echo(f"operation {op.id} created (domain {op.sip_domain})")


@operation_app.command("list")
def operation_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List operations."""
    rows = run_in_database(ctx, adm.list_operations)
    show_rows(rows, ["id", "name", "sip_domain", "time_zone", "acw_seconds", "default_queue", "max_transfers"],
          as_json, "operations")


# --- queues and agents -----------------------------------------------------------------------------------------


@queue_app.command("create")
def queue_create(
    ctx: typer.Context, operation_id: str, name: str,
    max_wait_seconds: float = typer.Option(60.0, "--max-wait"),
    ring_timeout: float | None = typer.Option(None, "--ring-timeout"),
    retry_after: int = typer.Option(60, "--retry-after"),
    recording: str | None = typer.Option(None, "--recording",
                                         help="never, always or on_demand. Default: the operation's."),
    music: str = typer.Option("", "--music",
                              help="A WAV file looped to callers waiting in the queue; converted once, at most 8 s. "
                                   "Default: the operation's hold music."),
    announcement: str = typer.Option("", "--announcement",
                                     help="A WAV file played to callers waiting, every --announcement-interval "
                                          "seconds; at most 8 s. Default: none."),
    announcement_interval: float = typer.Option(30.0, "--announcement-interval",
                                                help="Seconds from one announcement's start to the next's (>= 5)."),
) -> None:
    """Create a queue."""
    run_in_database(ctx, lambda c: adm.create_queue(c, operation_id, name, max_wait_seconds=max_wait_seconds,
                                         ring_timeout=ring_timeout, retry_after=retry_after,
                                         recording=recording, music=music, announcement=announcement,
                                         announcement_interval=announcement_interval))
    typer.echo(f"queue {name} created in operation {operation_id}")


@queue_app.command("list")
def queue_list(ctx: typer.Context, operation_id: str, as_json: bool = JSON_OPTION) -> None:
    """List an operation's queues."""
    show_rows(run_in_database(ctx, lambda c: adm.list_queues(c, operation_id)),
          ["name", "max_wait_seconds", "ring_timeout", "retry_after", "recording", "music_name",
           "announcement_name", "announcement_interval"], as_json,
          f"queues of {operation_id}")


@agent_app.command("create")
def agent_create(
    ctx: typer.Context, operation_id: str, extension: str,
    name: str = typer.Option("", "--name"),
    password: str = typer.Option(..., "--password", prompt=True, hide_input=True, confirmation_prompt=True,
                                 help="SIP password (stored as HA1 digests only)."),
    queue: Annotated[list[str] | None, typer.Option("--queue", help="A queue of the agent (repeatable).")] = None,
) -> None:
    """Create an agent (SIP credentials stored as HA1 in the operation's realm)."""
    run_in_database(ctx, lambda c: adm.create_agent(c, operation_id, extension, password, name=name,
                                                    queues=queue or []))
    typer.echo(f"agent {extension} created in operation {operation_id}")


@agent_app.command("list")
def agent_list(ctx: typer.Context, operation_id: str, as_json: bool = JSON_OPTION) -> None:
    """List an operation's agents."""
    show_rows(run_in_database(ctx, lambda c: adm.list_agents(c, operation_id)), ["extension", "name", "queues"],
              as_json, f"agents of {operation_id}")


# --- tokens ------------------------------------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    ctx: typer.Context, operation_id: str,
    label: str = typer.Option("", "--label"),
    concurrency_limit: int | None = typer.Option(None, "--concurrency-limit",
                                                 help="Requests in flight at once [the operation's, 2]."),
    daily_quota: int | None = typer.Option(None, "--daily-quota"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a token; it is printed once and stored hashed."""
    token, plain = run_in_database(ctx, lambda c: adm.create_token(c, operation_id, label=label,
                                                        concurrency_limit=concurrency_limit,
                                                        daily_quota=daily_quota))
    if as_json:
        typer.echo(json.dumps({"id": token.id, "operation_id": operation_id, "token": plain}))
        return
    typer.echo(f"token {token.id} created for operation {operation_id}:\n{plain}")
    typer.echo("Keep it now: only its hash is stored, it cannot be shown again.", err=True)


@token_app.command("list")
def token_list(ctx: typer.Context, operation_id: str | None = typer.Argument(None),
               as_json: bool = JSON_OPTION) -> None:
    """List tokens (without their values)."""
    show_rows(run_in_database(ctx, lambda c: adm.list_tokens(c, operation_id)),
          ["id", "operation_id", "label", "concurrency_limit", "daily_quota", "revoked"], as_json, "tokens")


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: str) -> None:
    """Revoke a token by its id."""
    token = run_in_database(ctx, lambda c: adm.revoke_token(c, token_id))
    typer.echo(f"token {token.id} of operation {token.operation_id} revoked")


# --- trunks and DIDs ----------------------------------------------------------------------------------------------


@trunk_app.command("create")
def trunk_create(
    ctx: typer.Context, operation_id: str, name: str,
    host: str = typer.Option(..., "--host", help="Gateway address (IP)."),
    port: int = typer.Option(5060, "--port"),
    transport: str = typer.Option("udp", "--transport"),
    dial_pattern: Annotated[list[str] | None,
                            typer.Option("--dial-pattern", help="Allowed number regex (repeatable).")] = None,
    strip: int = typer.Option(0, "--strip", help="Leading digits removed before sending."),
    prefix: str = typer.Option("", "--prefix", help="Prepended after stripping."),
    min_length: int = typer.Option(3, "--min-length"),
    max_length: int = typer.Option(20, "--max-length"),
    caller_id_policy: str = typer.Option("customer", "--caller-id-policy", help="customer, agent or fixed."),
    caller_id_number: str = typer.Option("", "--caller-id-number"),
    register: bool = typer.Option(False, "--register", help="Register to the provider."),
    username: str | None = typer.Option(None, "--username"),
    password: str | None = typer.Option(None, "--password"),
    auth_realm: str | None = typer.Option(None, "--auth-realm"),
    inbound_network: Annotated[list[str] | None,
                               typer.Option("--inbound-network", help="Provider source CIDR (repeatable).")] = None,
    dtmf_mode: str = typer.Option("rfc4733", "--dtmf-mode",
                                  help="rfc4733 (events in the media, anchored calls) or info (SIP INFO)."),
) -> None:
    """Create a trunk."""
    run_in_database(ctx, lambda c: adm.create_trunk(
        c, operation_id, name, host, port=port, transport=transport, dial_patterns=dial_pattern or [], dial_strip=strip,
        dial_prefix=prefix, dial_min_length=min_length, dial_max_length=max_length,
        caller_id_policy=caller_id_policy, caller_id_number=caller_id_number, register=register,
        username=username, password=password, auth_realm=auth_realm, inbound_networks=inbound_network or [],
        dtmf_mode=dtmf_mode))
    typer.echo(f"trunk {name} created in operation {operation_id}")


@trunk_app.command("list")
def trunk_list(ctx: typer.Context, operation_id: str, as_json: bool = JSON_OPTION) -> None:
    """List an operation's trunks."""
    show_rows(run_in_database(ctx, lambda c: adm.list_trunks(c, operation_id)),
          ["name", "host", "port", "transport", "dial_plan.allowed_patterns", "caller_id_policy",
           "inbound_networks", "dtmf_mode", "dids"], as_json, f"trunks of {operation_id}")


@did_app.command("create")
def did_create(ctx: typer.Context, operation_id: str, number: str,
               queue: str = typer.Option(..., "--queue"),
               trunk: str | None = typer.Option(None, "--trunk")) -> None:
    """Create a DID routed to a queue."""
    run_in_database(ctx, lambda c: adm.create_did(c, operation_id, number, queue, trunk=trunk))
    typer.echo(f"DID {number} created in operation {operation_id}")


@did_app.command("list")
def did_list(ctx: typer.Context, operation_id: str, as_json: bool = JSON_OPTION) -> None:
    """List an operation's DIDs."""
    show_rows(run_in_database(ctx, lambda c: adm.list_dids(c, operation_id)), ["number", "queue", "trunk"], as_json,
          f"DIDs of {operation_id}")


# --- auxiliary states and activity codes --------------------------------------------------------------------------


@aux_app.command("create")
def aux_create(ctx: typer.Context, operation_id: str, aux_id: str, name: str) -> None:
    """Create an auxiliary state."""
    run_in_database(ctx, lambda c: adm.create_aux_state(c, operation_id, aux_id, name))
    typer.echo(f"auxiliary state {aux_id} created in operation {operation_id}")


@aux_app.command("list")
def aux_list(ctx: typer.Context, operation_id: str, as_json: bool = JSON_OPTION) -> None:
    """List an operation's auxiliary states."""
    show_rows(run_in_database(ctx, lambda c: adm.list_aux_states(c, operation_id)), ["id", "name"], as_json,
          f"auxiliary states of {operation_id}")


@activity_app.command("create")
def activity_create(ctx: typer.Context, operation_id: str, group: int, code: str, name: str) -> None:
    """Create an activity code of group 1 (cod_act) or 2 (cod_act_2)."""
    run_in_database(ctx, lambda c: adm.create_activity_code(c, operation_id, group, code, name))
    typer.echo(f"activity code {code} (group {group}) created in operation {operation_id}")


@activity_app.command("list")
def activity_list(ctx: typer.Context, operation_id: str, as_json: bool = JSON_OPTION) -> None:
    """List an operation's activity codes."""
    show_rows(run_in_database(ctx, lambda c: adm.list_activity_codes(c, operation_id)), ["group", "code", "name"],
              as_json, f"activity codes of {operation_id}")


# --- webhooks ---------------------------------------------------------------------------------------------------

EVENT_OPTION = typer.Option("--event", help="An event type to send (repeatable); none = every event.")


@webhook_app.command("add")
def webhook_add(
    ctx: typer.Context, operation_id: str, url: str,
    secret: str = typer.Option(..., "--secret", prompt=True, hide_input=True,
                               help="Signing secret, 16-256 characters (stored as given: it signs)."),
    event: Annotated[list[str] | None, EVENT_OPTION] = None,
) -> None:
    """Add a webhook to an operation."""
    hook = run_in_database(ctx, lambda c: create_webhook(c, operation_id, url, secret, events=event or []))
    typer.echo(f"webhook {hook.id} added to operation {operation_id}: {hook.url}")


@webhook_app.command("update")
def webhook_update(
    ctx: typer.Context, webhook_id: str,
    url: str | None = typer.Option(None, "--url"),
    secret: str | None = typer.Option(None, "--secret"),
    event: Annotated[list[str] | None, EVENT_OPTION] = None,
    all_events: bool = typer.Option(False, "--all-events", help="Drop the event filter: send every event."),
) -> None:
    """Change a webhook's URL, secret or events; running nodes follow at their next directory poll."""
    if all_events and event:
        fail("--event and --all-events: give one or the other")
    events = [] if all_events else (event or None)
    hook = run_in_database(ctx, lambda c: update_webhook(c, webhook_id, url=url, secret=secret, events=events))
    typer.echo(f"webhook {hook.id} of operation {hook.operation_id} updated: {hook.url}")


@webhook_app.command("remove")
def webhook_remove(ctx: typer.Context, webhook_id: str) -> None:
    """Remove a webhook."""
    hook = run_in_database(ctx, lambda c: delete_webhook(c, webhook_id))
    typer.echo(f"webhook {hook.id} of operation {hook.operation_id} removed")


@webhook_app.command("list")
def webhook_list(ctx: typer.Context, operation_id: str | None = typer.Argument(None),
                 as_json: bool = JSON_OPTION) -> None:
    """List webhooks (without their secrets)."""
    show_rows(run_in_database(ctx, lambda c: list_webhooks(c, operation_id)), ["id", "operation_id", "url", "events"],
              as_json, "webhooks")


# --- the whole operation from one file ---------------------------------------------------------------------------


@admin_app.command("load")
def load(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="The operation's TOML file.")]) -> None:
    """Load a whole operation from one TOML file (format: see `callbridge.admin`)."""
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{file}: {exc.strerror or exc}")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        fail(f"{file}: not valid TOML ({exc})")
    result = run_in_database(ctx, lambda c: load_operation(c, doc))
    counts = ", ".join(f"{n} {section}" for section, n in result.counts.items())
    typer.echo(f"operation {result.operation.id} loaded from {file}: {counts}")
    for token, plain in result.tokens:
        typer.echo(f"token {token.id} ({token.label or 'no label'}): {plain}")
    if result.tokens:
        typer.echo("Keep the tokens now: only their hashes are stored.", err=True)
