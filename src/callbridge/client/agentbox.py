"""Clients of the agentbox endpoint (Wolkvox "Agent APIs v2"), for callbridge and for the Wolkvox cloud alike.

Requests are made exactly as Wolkvox documents them: ``POST {base}/api/v2/agentbox.php?api=<verb>&agent_id=...``
with every parameter in the query string (percent-encoded UTF-8, in the verb's documented order, optional ones left
out when not given), no body, and the headers ``wolkvox-token`` and ``wolkvox_server`` (the latter when the
operation is known). Phone numbers, extensions and codes are strings: leading zeros and a ``+`` or ``9`` prefix are
kept as they are.

Answers are read leniently, as the cloud documents them loosely: ``code`` as a string or a number, ``data``
missing or null, extra members, success messages this client does not know. A failure becomes the exception named
after it (see ``callbridge.client.errors``); only the concurrency refusal is retried (``limits``).

    with AgentboxClient("http://127.0.0.1:8080", token="...", server="0042") as box:
        conn_id = box.transfer("1001", "0573001234567").conn_id
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx

from callbridge.client import errors, results
from callbridge.client.limits import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_TIMEOUT_S,
    RetryPolicy,
    loop_slots,
    thread_slots,
)

ENDPOINT = "/api/v2/agentbox.php"
TOKEN_HEADER = "wolkvox-token"
SERVER_HEADER = "wolkvox_server"

Params = list[tuple[str, str]]


def wolkvox_url(server: str) -> str:
    """The Wolkvox cloud's base URL of an operation: ``0042`` -> ``https://wv0042.wolkvox.com``."""
    if not re.fullmatch(r"[0-9A-Za-z]{1,32}", server):
        raise ValueError(f"not an operation id: {server!r}")
    return f"https://wv{server}.wolkvox.com"


def _text(value: str | int) -> str:
    return value if isinstance(value, str) else str(value)


def query(verb: str, *pairs: tuple[str, str | int | None]) -> Params:
    """``api=<verb>`` then the given parameters in order, leaving out those that are None."""
    return [("api", verb), *((name, _text(value)) for name, value in pairs if value is not None)]


def encode_query(params: Sequence[tuple[str, str]]) -> str:
    """RFC 3986 percent-encoding of every reserved character (a space is ``%20``, not the form's ``+``, which a
    strict server would read as a literal plus: the dial prefix)."""
    return "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in params)


def recall_date(when: str | datetime) -> str:
    """``YYYYmmddHHiiss`` as the contract writes it; a datetime is taken in the operation's time zone."""
    return when.strftime("%Y%m%d%H%M%S") if isinstance(when, datetime) else when


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def parse(verb: str, status: int, content: bytes) -> results.AgentboxResult:
    """The result of an answer, or the exception it stands for (raised)."""
    text = content.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        raise errors.UnexpectedResponse(status, text, "the answer is not JSON") from None
    if not isinstance(body, dict) or not {"code", "msg", "error"} & body.keys():
        raise errors.UnexpectedResponse(status, text, "the answer is not an agentbox envelope")
    code = _as_int(body.get("code"))
    if code is None or (status >= 400 > code):
        code = status  # no usable code: the HTTP status says it
    msg = body.get("msg")
    msg = "" if msg is None else str(msg)
    error = body.get("error")
    error = None if error is None else str(error)
    if code >= 400:
        raise errors.from_envelope(code, error, msg, status=status)
    if not 200 <= code < 300:
        raise errors.UnexpectedResponse(status, text, f"code {code} is neither a success nor an error")
    data = body.get("data")
    return results.build(verb, code, msg, data if isinstance(data, dict) else {})


class _Base:
    def __init__(self, base_url: str, *, token: str, server: str | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, retry: RetryPolicy | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, headers: Mapping[str, str] | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.server = server
        self.max_in_flight = max_in_flight
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._headers = {**(headers or {}), TOKEN_HEADER: token}
        if server is not None:
            self._headers[SERVER_HEADER] = server


class AgentboxClient(_Base):
    """Blocking client: one method per verb. Thread-safe; close it (or use ``with``) when done."""

    def __init__(self, base_url: str, *, token: str, server: str | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, retry: RetryPolicy | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, headers: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, token=token, server=server, max_in_flight=max_in_flight, retry=retry,
                         timeout=timeout, headers=headers)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=httpx.Timeout(timeout),
                                  transport=transport)
        self._slots = thread_slots(self.base_url, token, max_in_flight)

    @classmethod
    def for_wolkvox(cls, server: str, token: str, **kwargs: Any) -> AgentboxClient:
        return cls(wolkvox_url(server), token=token, server=server, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentboxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, params: Sequence[tuple[str, str]]) -> results.AgentboxResult:
        """One request with ``params`` (``api`` first), within the in-flight limit, retrying the refusal."""
        verb = params[0][1]
        delays = self.retry.delays()
        while True:
            with self._slots:
                response = self._http.post(f"{ENDPOINT}?{encode_query(params)}")
            try:
                return parse(verb, response.status_code, response.content)
            except errors.ConcurrencyLimit:
                delay = next(delays, None)
                if delay is None:
                    raise
            time.sleep(delay)

    def transfer(self, agent_id: str, customer_phone: str) -> results.TransferResult:
        """Blind transfer of the agent's call to a number or an agent's extension; answers once started."""
        r = self.call(query("transfer", ("agent_id", agent_id), ("customer_phone", customer_phone)))
        assert isinstance(r, results.TransferResult)
        return r

    def dial(self, agent_id: str, customer_phone: str, *, customer_id: str | None = None,
             customer_name: str | None = None) -> results.DialResult:
        r = self.call(query("dial", ("agent_id", agent_id), ("customer_phone", customer_phone),
                            ("customer_id", customer_id), ("customer_name", customer_name)))
        assert isinstance(r, results.DialResult)
        return r

    def hang(self, agent_id: str) -> results.AgentboxResult:
        return self.call(query("hang", ("agent_id", agent_id)))

    def hold(self, agent_id: str) -> results.ToggleResult:
        r = self.call(query("hold", ("agent_id", agent_id)))
        assert isinstance(r, results.ToggleResult)
        return r

    def mute(self, agent_id: str) -> results.ToggleResult:
        r = self.call(query("mute", ("agent_id", agent_id)))
        assert isinstance(r, results.ToggleResult)
        return r

    def change_status(self, agent_id: str, status: str) -> results.AgentboxResult:
        return self.call(query("change_status", ("agent_id", agent_id), ("status", status)))

    def type(self, agent_id: str, cod_act: str, cod_act_2: str, *,
             comments: str | None = None) -> results.AgentboxResult:
        return self.call(query("type", ("agent_id", agent_id), ("cod_act", cod_act), ("cod_act_2", cod_act_2),
                               ("comments", comments)))

    def hang_type_ready(self, agent_id: str, cod_act: str, *, cod_act_2: str | None = None,
                        comments: str | None = None) -> results.AgentboxResult:
        return self.call(query("hang_type_ready", ("agent_id", agent_id), ("cod_act", cod_act),
                               ("cod_act_2", cod_act_2), ("comments", comments)))

    def dtmf(self, agent_id: str, tones: str) -> results.DtmfResult:
        r = self.call(query("dtmf", ("agent_id", agent_id), ("tones", tones)))
        assert isinstance(r, results.DtmfResult)
        return r

    def aux_call(self, agent_id: str, customer_phone: str) -> results.AuxCallResult:
        r = self.call(query("aux_call", ("agent_id", agent_id), ("customer_phone", customer_phone)))
        assert isinstance(r, results.AuxCallResult)
        return r

    def agent_display(self, agent_id: str, display: Literal["show", "hide"],
                      button: Literal["hungup", "disposition", "dial"]) -> results.AgentboxResult:
        return self.call(query("agent_display", ("agent_id", agent_id), ("display", display), ("button", button)))

    def recall(self, agent_id: str, customer_phone: str, date: str | datetime,
               type_recall: Literal["auto", "manual"]) -> results.AgentboxResult:
        return self.call(query("recall", ("agent_id", agent_id), ("customer_phone", customer_phone),
                               ("date", recall_date(date)), ("type_recall", type_recall)))


class AsyncAgentboxClient(_Base):
    """asyncio client: the same methods as :class:`AgentboxClient`, as coroutines."""

    def __init__(self, base_url: str, *, token: str, server: str | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, retry: RetryPolicy | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, headers: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, token=token, server=server, max_in_flight=max_in_flight, retry=retry,
                         timeout=timeout, headers=headers)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                       timeout=httpx.Timeout(timeout), transport=transport)

    @classmethod
    def for_wolkvox(cls, server: str, token: str, **kwargs: Any) -> AsyncAgentboxClient:
        return cls(wolkvox_url(server), token=token, server=server, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAgentboxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(self, params: Sequence[tuple[str, str]]) -> results.AgentboxResult:
        verb = params[0][1]
        delays = self.retry.delays()
        slots = loop_slots(self.base_url, self.token, self.max_in_flight)
        while True:
            async with slots:
                response = await self._http.post(f"{ENDPOINT}?{encode_query(params)}")
            try:
                return parse(verb, response.status_code, response.content)
            except errors.ConcurrencyLimit:
                delay = next(delays, None)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    async def transfer(self, agent_id: str, customer_phone: str) -> results.TransferResult:
        r = await self.call(query("transfer", ("agent_id", agent_id), ("customer_phone", customer_phone)))
        assert isinstance(r, results.TransferResult)
        return r

    async def dial(self, agent_id: str, customer_phone: str, *, customer_id: str | None = None,
                   customer_name: str | None = None) -> results.DialResult:
        r = await self.call(query("dial", ("agent_id", agent_id), ("customer_phone", customer_phone),
                                  ("customer_id", customer_id), ("customer_name", customer_name)))
        assert isinstance(r, results.DialResult)
        return r

    async def hang(self, agent_id: str) -> results.AgentboxResult:
        return await self.call(query("hang", ("agent_id", agent_id)))

    async def hold(self, agent_id: str) -> results.ToggleResult:
        r = await self.call(query("hold", ("agent_id", agent_id)))
        assert isinstance(r, results.ToggleResult)
        return r

    async def mute(self, agent_id: str) -> results.ToggleResult:
        r = await self.call(query("mute", ("agent_id", agent_id)))
        assert isinstance(r, results.ToggleResult)
        return r

    async def change_status(self, agent_id: str, status: str) -> results.AgentboxResult:
        return await self.call(query("change_status", ("agent_id", agent_id), ("status", status)))

    async def type(self, agent_id: str, cod_act: str, cod_act_2: str, *,
                   comments: str | None = None) -> results.AgentboxResult:
        return await self.call(query("type", ("agent_id", agent_id), ("cod_act", cod_act),
                                     ("cod_act_2", cod_act_2), ("comments", comments)))

    async def hang_type_ready(self, agent_id: str, cod_act: str, *, cod_act_2: str | None = None,
                              comments: str | None = None) -> results.AgentboxResult:
        return await self.call(query("hang_type_ready", ("agent_id", agent_id), ("cod_act", cod_act),
                                     ("cod_act_2", cod_act_2), ("comments", comments)))

    async def dtmf(self, agent_id: str, tones: str) -> results.DtmfResult:
        r = await self.call(query("dtmf", ("agent_id", agent_id), ("tones", tones)))
        assert isinstance(r, results.DtmfResult)
        return r

    async def aux_call(self, agent_id: str, customer_phone: str) -> results.AuxCallResult:
        r = await self.call(query("aux_call", ("agent_id", agent_id), ("customer_phone", customer_phone)))
        assert isinstance(r, results.AuxCallResult)
        return r

    async def agent_display(self, agent_id: str, display: Literal["show", "hide"],
                            button: Literal["hungup", "disposition", "dial"]) -> results.AgentboxResult:
        return await self.call(query("agent_display", ("agent_id", agent_id), ("display", display),
                                     ("button", button)))

    async def recall(self, agent_id: str, customer_phone: str, date: str | datetime,
                     type_recall: Literal["auto", "manual"]) -> results.AgentboxResult:
        return await self.call(query("recall", ("agent_id", agent_id), ("customer_phone", customer_phone),
                                     ("date", recall_date(date)), ("type_recall", type_recall)))
