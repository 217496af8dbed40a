"""Every row of the agentbox contract becomes its exception, carrying code, error and msg; unknown answers fall
back leniently (httpx.MockTransport)."""

from __future__ import annotations

import httpx
import pytest

from callbridge.client import (
    AgentAlreadyOnCall,
    AgentboxClient,
    AgentboxError,
    AgentNotFound,
    AgentNotLoggedIn,
    AsyncAgentboxClient,
    BadRequest,
    CallControlUnavailable,
    CallNotUpdated,
    ConcurrencyLimit,
    Conflict,
    Forbidden,
    InvalidParameter,
    InvalidToken,
    MethodNotAllowed,
    MissingParameters,
    NoActiveCall,
    NoCallToType,
    NoRecentCall,
    NotFound,
    PhoneNotRegistered,
    RetryPolicy,
    ServerError,
    TokenLimitExceeded,
    TokenMissing,
    TransferInProgress,
    TransferTargetUnavailable,
    UnexpectedResponse,
    UnknownApi,
)
from callbridge.client import errors as client_errors
from callbridge.http import contract

# contract row key -> the exception it must raise
EXPECTED: dict[str, type[AgentboxError]] = {
    "UNKNOWN_API": UnknownApi,
    "MISSING_PARAMETERS": MissingParameters,
    "INVALID_PARAMETER": InvalidParameter,
    "TOKEN_MISSING": TokenMissing,
    "INVALID_TOKEN": InvalidToken,
    "CONCURRENCY_LIMIT": ConcurrencyLimit,
    "TOKEN_LIMIT_EXCEEDED": TokenLimitExceeded,
    "AGENT_NOT_FOUND": AgentNotFound,
    "AGENT_NOT_LOGGED_IN": AgentNotLoggedIn,
    "NO_ACTIVE_CALL": NoActiveCall,
    "ALREADY_ON_CALL": AgentAlreadyOnCall,
    "TRANSFER_IN_PROGRESS": TransferInProgress,
    "TARGET_NOT_AVAILABLE": TransferTargetUnavailable,
    "NUMBER_NOT_ALLOWED": InvalidParameter,
    "METHOD_NOT_ALLOWED": MethodNotAllowed,
    "CALL_CONTROL_UNAVAILABLE": CallControlUnavailable,
    "PHONE_NOT_REGISTERED": PhoneNotRegistered,
    "NO_RECENT_CALL": NoRecentCall,
    "NO_CALL_TO_TYPE": NoCallToType,
    "CALL_NOT_UPDATED": CallNotUpdated,
}


def test_every_contract_row_is_covered() -> None:
    assert set(EXPECTED) == set(contract.ERRORS)


def _row(key: str) -> contract.ErrorRow:
    return contract.invalid_parameter("agent_id") if key == "INVALID_PARAMETER" else contract.error(key)


def _client(status: int, body: bytes, calls: list[httpx.Request] | None = None) -> AgentboxClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(request)
        return httpx.Response(status, content=body, headers={"content-type": contract.CONTENT_TYPE})

    return AgentboxClient("http://127.0.0.1:8080", token="t", server="0042", transport=httpx.MockTransport(handler),
                          retry=RetryPolicy(attempts=1))


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_each_row_raises_its_exception(key: str) -> None:
    row = _row(key)
    with _client(row.status, row.body()) as box, pytest.raises(AgentboxError) as caught:
        box.transfer("1001", "1002")
    exc = caught.value
    assert type(exc) is EXPECTED[key]
    assert (exc.code, exc.error, exc.msg, exc.status) == (row.status, row.error, row.msg, row.status)


@pytest.mark.parametrize("key", sorted(EXPECTED))
async def test_each_row_raises_its_exception_async(key: str) -> None:
    row = _row(key)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(row.status, content=row.body())

    async with AsyncAgentboxClient("http://127.0.0.1:8080", token="t", transport=httpx.MockTransport(handler),
                                   retry=RetryPolicy(attempts=1)) as box:
        with pytest.raises(EXPECTED[key]) as caught:
            await box.hang("1001")
    assert caught.value.msg == row.msg


def test_invalid_parameter_names_the_parameter() -> None:
    for name in ("agent_id", "tones", "customer_phone", "cod_act_2"):
        with _client(400, contract.invalid_parameter(name).body()) as box, pytest.raises(InvalidParameter) as c:
            box.dtmf("1001", "x")
        assert c.value.name == name
    with _client(400, contract.error("NUMBER_NOT_ALLOWED").body()) as box, pytest.raises(InvalidParameter) as c:
        box.transfer("1001", "900")
    assert c.value.name == "customer_phone"


def test_concurrency_limit_carries_the_limit() -> None:
    with _client(403, contract.concurrency_limit(5).body()) as box, pytest.raises(ConcurrencyLimit) as caught:
        box.hang("1001")
    assert caught.value.limit == 5


def test_the_tree() -> None:
    assert issubclass(InvalidToken, Forbidden) and issubclass(ConcurrencyLimit, Forbidden)
    assert issubclass(TokenLimitExceeded, Forbidden)
    assert all(issubclass(c, Conflict) for c in (AgentNotLoggedIn, NoActiveCall, AgentAlreadyOnCall,
                                                  TransferInProgress, TransferTargetUnavailable, PhoneNotRegistered,
                                                  NoRecentCall, NoCallToType, CallNotUpdated))
    assert all(issubclass(c, BadRequest) for c in (UnknownApi, MissingParameters, InvalidParameter))
    assert issubclass(AgentNotFound, NotFound) and issubclass(CallControlUnavailable, ServerError)
    assert all(issubclass(c, AgentboxError) for c in EXPECTED.values())
    # the docstring draws every class of the module
    doc = client_errors.__doc__ or ""
    names = [n for n, v in vars(client_errors).items() if isinstance(v, type) and issubclass(v, AgentboxError)]
    assert [n for n in names if f" {n} " not in doc and not doc.count(f"+-- {n}")] == []


@pytest.mark.parametrize(("status", "body", "cls", "code", "msg"), [
    # the code as a number
    (403, b'{"code":403,"error":"FORBIDDEN","msg":"PLEASE VALIDATE TOKEN"}', InvalidToken, 403,
     "PLEASE VALIDATE TOKEN"),
    # messages differing in case and spacing
    (409, b'{"code":"409","error":"CONFLICT","msg":"Agent has no  active call"}', NoActiveCall, 409,
     "Agent has no  active call"),
    # an HTTP 200 carrying an error envelope: the envelope's code wins
    (200, b'{"code":"404","error":"NOT FOUND","msg":"AGENT DOES NOT EXIST"}', AgentNotFound, 404,
     "AGENT DOES NOT EXIST"),
    # an unknown message falls back to the class of its code
    (409, b'{"code":"409","error":"CONFLICT","msg":"AGENTE OCUPADO"}', Conflict, 409, "AGENTE OCUPADO"),
    (403, b'{"code":"403","msg":"NO ACCESS"}', Forbidden, 403, "NO ACCESS"),
    (400, b'{"code":"400","msg":"BAD"}', BadRequest, 400, "BAD"),
    (404, b'{"code":"404","msg":"?"}', NotFound, 404, "?"),
    (401, b'{"code":"401","msg":"WHO ARE YOU"}', TokenMissing, 401, "WHO ARE YOU"),
    (502, b'{"code":"502","msg":"UPSTREAM"}', ServerError, 502, "UPSTREAM"),
    (418, b'{"code":"418","msg":"TEAPOT"}', AgentboxError, 418, "TEAPOT"),
    # an error envelope whose code says 200 while HTTP says 500: the HTTP status wins
    (500, b'{"code":"200","msg":"?"}', ServerError, 500, "?"),
    # msg missing
    (409, b'{"code":"409","error":"CONFLICT"}', Conflict, 409, ""),
])
def test_lenient_errors(status: int, body: bytes, cls: type[AgentboxError], code: int, msg: str) -> None:
    with _client(status, body) as box, pytest.raises(AgentboxError) as caught:
        box.hang("1001")
    assert type(caught.value) is cls
    assert (caught.value.code, caught.value.msg, caught.value.status) == (code, msg, status)


@pytest.mark.parametrize(("status", "body"), [
    (502, b"<html><body>Bad Gateway</body></html>"),
    (200, b"OK"),
    (200, b"[1, 2]"),
    (200, b'{"result": "ok"}'),
    (200, b'{"code":"302","msg":"moved"}'),
    (200, b""),
])
def test_unexpected_responses(status: int, body: bytes) -> None:
    with _client(status, body) as box, pytest.raises(UnexpectedResponse) as caught:
        box.hang("1001")
    assert caught.value.status == status
    assert caught.value.body == body.decode()
