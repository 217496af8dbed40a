"""What the commands of the `callbridge` command line share: the exit codes, bad input as one line on stderr
(:class:`OneLineCommand`, :class:`OneLineGroup`, :func:`usage_line`), and, for the commands that talk to a server
over HTTP (`callbridge agent`, `calls`, `events`), the connection flags and the client's errors as an exit code and
one line (:func:`reporting_errors`). The exit codes are listed in :mod:`callbridge.cli.agent`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import httpx
import typer
from typer.core import TyperCommand, TyperGroup

try:  # Typer >= 0.22 carries its own copy of Click; before, TyperCommand is Click's
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

from callbridge.client import errors

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TOKEN = 4
EXIT_NOT_FOUND = 5
EXIT_CONFLICT = 6

DEFAULT_URL = "http://127.0.0.1:8080"

# Most specific first: an exception takes the code of the first class it is an instance of.
_EXIT_BY_ERROR: tuple[tuple[type[errors.AgentboxError], int], ...] = (
    (errors.BadRequest, EXIT_USAGE),
    (errors.TokenMissing, EXIT_TOKEN),
    (errors.Forbidden, EXIT_TOKEN),
    (errors.NotFound, EXIT_NOT_FOUND),
    (errors.Conflict, EXIT_CONFLICT),
    (errors.EventsExpired, EXIT_CONFLICT),
    (errors.IdempotencyKeyReused, EXIT_CONFLICT),
)

def exit_code_for(exc: errors.AgentboxError) -> int:
    return next((code for cls, code in _EXIT_BY_ERROR if isinstance(exc, cls)), EXIT_OTHER)


def describe(exc: errors.AgentboxError) -> str:
    """``404 NOT FOUND: AGENT DOES NOT EXIST``; a problem whose title is its message says it once."""
    head = f"{exc.code} {exc.error}:" if exc.error and exc.error != exc.msg else str(exc.code)
    line = f"{head} {exc.msg}" if exc.msg else head
    if isinstance(exc, errors.EventsExpired) and exc.oldest_seq is not None:
        line += f" (the oldest kept is {exc.oldest_seq}: --after {max(0, exc.oldest_seq - 1)} starts there)"
    return line


def usage_line(exc: UsageError) -> str:
    where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return f"error: {' '.join(exc.format_message().split())}{where}"  # one line, even for a list of choices


class _OneLineUsage:
    """Bad flags end in one line on stderr and exit 2, instead of click's framed block (mixed into a command)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            parsed: list[str] = super().parse_args(ctx, args)  # type: ignore[misc]  # a mixin before click's Command
            return parsed
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            typer.echo(usage_line(exc), err=True)
            raise typer.Exit(EXIT_USAGE) from None


class OneLineCommand(_OneLineUsage, TyperCommand):
    """A command whose bad flags end in one line on stderr and exit 2, instead of a framed block."""


class OneLineGroup(_OneLineUsage, TyperGroup):
    """A group whose bad flags and unknown subcommands end like :class:`OneLineCommand`'s."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            typer.echo(usage_line(exc), err=True)
            raise typer.Exit(EXIT_USAGE) from None


def _check_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise typer.BadParameter(f"not a URL: {value!r} ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise typer.BadParameter(f"not an http(s) URL: {value!r}")
    return value


UrlOption = Annotated[str, typer.Option("--url", envvar="CALLBRIDGE_URL", callback=_check_url,
                                        help="Base URL of callbridge (or of the Wolkvox cloud).")]
TokenOption = Annotated[str | None, typer.Option("--token", envvar="CALLBRIDGE_TOKEN", show_default=False,
                                                 help="API token (prefer $CALLBRIDGE_TOKEN).")]
ServerOption = Annotated[str | None, typer.Option("--server", envvar="CALLBRIDGE_SERVER", show_default=False,
                                                  help="Operation id sent as the wolkvox_server header.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
def fail(message: str, exit_code: int, *, json_out: bool, payload: Mapping[str, Any] | None = None) -> NoReturn:
    """One line on stderr (and the JSON failure object on stdout with --json), then exit."""
    if json_out:
        typer.echo(json.dumps({"ok": False, "exit_code": exit_code, **(payload or {})}, ensure_ascii=False))
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(exit_code)


def require_token(token: str | None, *, json_out: bool) -> str:
    if token is None or not token.strip():
        fail("no token: pass --token or set CALLBRIDGE_TOKEN", EXIT_TOKEN, json_out=json_out,
             payload={"code": None, "error": "TOKEN MISSING", "msg": "no token given", "key": "TOKEN_MISSING"})
    return token


@contextmanager
def reporting_errors(url: str, *, json_out: bool) -> Iterator[None]:
    """Turns what the client raises into an exit code and one line."""
    try:
        yield
    except errors.UnexpectedResponse as exc:
        fail(f"unexpected answer from {url} (HTTP {exc.status}): {exc.msg}", EXIT_OTHER, json_out=json_out,
             payload={"code": exc.status, "error": None, "msg": exc.msg, "key": None})
    except errors.AgentboxError as exc:
        fail(describe(exc), exit_code_for(exc), json_out=json_out,
             payload={"code": exc.code, "error": exc.error, "msg": exc.msg, "key": exc.key})
    except httpx.TimeoutException:
        fail(f"{url} did not answer in time", EXIT_UNREACHABLE, json_out=json_out,
             payload={"code": None, "error": "UNREACHABLE", "msg": "timeout", "key": None})
    except httpx.TransportError as exc:
        reason = str(exc) or type(exc).__name__
        fail(f"cannot reach {url}: {reason}", EXIT_UNREACHABLE, json_out=json_out,
             payload={"code": None, "error": "UNREACHABLE", "msg": reason, "key": None})
    except httpx.HTTPError as exc:
        fail(f"{url}: {exc or type(exc).__name__}", EXIT_OTHER, json_out=json_out,
             payload={"code": None, "error": None, "msg": str(exc), "key": None})
