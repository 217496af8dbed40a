"""baresip (baresip-core 1.0.0) as a real softphone, driven over its ctrl_tcp interface.

    async with Baresip(answermode="auto") as phone:          # config dir, WAV, process, control connection
        await phone.command("dial", "sip:1001@127.0.0.1:5060")
        event = await phone.wait_event("CALL_ESTABLISHED")

Headless as docs/peers.md says: one config directory per phone; ``sip_listen 127.0.0.1:<port>`` (it also opens
TLS on port+1, so the port is taken from a free block of two), ``net_interface 127.0.0.1``, ``dns_server
127.0.0.1:53`` and IP literals only; audio from ``aufile`` playing a long 8 kHz mono WAV written with the ``wave``
module (a quiet square wave, or a sine tone at ``tone_hz``; a call ends when the file ends), audio out to
``aubridge``; modules g711, aufile, aubridge, account (which loads the ``accounts`` file), menu, ctrl_tcp.

ctrl_tcp speaks netstring-framed JSON (``LEN:{...},``) both ways: a command ``{"command", "params", "token"}``
gets a response ``{"response": true, "ok", "data", "token"}``; events come as ``{"event": true, "type", ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from . import require_binary, stop_process_group
from .ports import free_port

MODULE_PATH = "/usr/lib/baresip/modules"


def write_wav(path: Path, seconds: float = 600.0, rate: int = 8000) -> Path:
    """A quiet 8 kHz mono 16-bit WAV (a soft 400 Hz square wave, so that the stream is not all zeros)."""
    period = rate // 400
    cycle = b"".join((300 if i < period // 2 else -300).to_bytes(2, "little", signed=True) for i in range(period))
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        chunk = cycle * (rate // period)  # one second
        for _ in range(frames // rate):
            out.writeframes(chunk)
    return path


def write_tone_wav(path: Path, hz: float, seconds: float = 600.0, rate: int = 8000, dbfs: float = -12.0) -> Path:
    """An 8 kHz mono 16-bit WAV of a sine tone at `hz` and `dbfs` (what a listener's frequency measure picks)."""
    amplitude = 32767 * 10 ** (dbfs / 20)
    second = b"".join(round(amplitude * math.sin(2 * math.pi * hz * i / rate)).to_bytes(2, "little", signed=True)
                      for i in range(rate))  # a whole number of cycles when hz is whole: seamless repeats
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        for _ in range(int(seconds)):
            out.writeframes(second)
    return path


def netstring(payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return b"%d:%s," % (len(body), body)


class NetstringReader:
    """Frames ``LEN:payload,`` items out of a byte stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        items = []
        while True:
            colon = self._buffer.find(b":")
            if colon < 0:
                break
            length = int(self._buffer[:colon])
            end = colon + 1 + length
            if len(self._buffer) < end + 1:
                break
            if self._buffer[end:end + 1] != b",":
                raise ValueError("broken netstring from baresip")
            items.append(bytes(self._buffer[colon + 1:end]))
            del self._buffer[:end + 1]
        return items


class Baresip:
    def __init__(self, *, user: str = "1001", answermode: str = "manual", port: int = 0,
                 accounts: list[str] | None = None, workdir: Path | None = None, trace_sip: bool = True,
                 wav_seconds: float = 600.0, tone_hz: float | None = None) -> None:
        self.binary = require_binary("baresip", "baresip-core")
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host, span=2)  # SIP on port, TLS on port+1
        self.ctrl_port = free_port(self.host, udp=False)
        self.user = user
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="baresip-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        # what it sends: a quiet square wave, or a sine tone at `tone_hz` (to be measured by who hears it)
        self.wav = (write_wav(self.workdir / "source.wav", wav_seconds) if tone_hz is None
                    else write_tone_wav(self.workdir / "source.wav", tone_hz, wav_seconds))
        self.trace_sip = trace_sip
        default_account = f"<sip:{user}@{self.host}:{self.port}>;regint=0;answermode={answermode}"
        self._write_config(accounts if accounts is not None else [default_account])
        self.log_file = self.workdir / "baresip.log"
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.all_events: list[dict[str, Any]] = []
        self._responses: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._token = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.host}:{self.port}"

    def _write_config(self, accounts: list[str]) -> None:
        modules = "\n".join(f"module {m}.so" for m in ("g711", "aufile", "aubridge"))
        (self.workdir / "config").write_text(f"""poll_method epoll
sip_listen {self.host}:{self.port}
net_interface {self.host}
dns_server 127.0.0.1:53
audio_source aufile,{self.wav}
audio_player aubridge,x
audio_alert aubridge,x
audio_path {self.workdir}
rtp_ports 20000-40000
module_path {MODULE_PATH}
{modules}
module_app account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen {self.host}:{self.ctrl_port}
""")
        (self.workdir / "accounts").write_text("\n".join(accounts) + "\n")
        (self.workdir / "contacts").write_text("")

    # -- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self, ready_timeout: float = 10.0) -> Baresip:
        args = [self.binary, "-f", str(self.workdir)] + (["-s"] if self.trace_sip else [])
        with open(self.log_file, "wb") as log:
            self._proc = subprocess.Popen(args, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"baresip exited ({self._proc.returncode}):\n{self.log()[-3000:]}")
            try:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.ctrl_port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"baresip's ctrl_tcp did not open:\n{self.log()[-3000:]}") from None
                await asyncio.sleep(0.05)
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        return self

    async def _read_loop(self) -> None:
        assert self._reader is not None
        framer = NetstringReader()
        while True:
            data = await self._reader.read(65536)
            if not data:
                return
            for item in framer.feed(data):
                message = json.loads(item)
                if message.get("event"):
                    self.all_events.append(message)
                    self.events.put_nowait(message)
                elif message.get("response"):
                    future = self._responses.pop(str(message.get("token")), None)
                    if future is not None and not future.done():
                        future.set_result(message)

    async def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Run a ctrl_tcp command; its response (``ok``, ``data``)."""
        assert self._writer is not None, "not started"
        self._token += 1
        token = str(self._token)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[token] = future
        self._writer.write(netstring({"command": command, "params": params, "token": token}))
        await self._writer.drain()
        return await asyncio.wait_for(future, timeout)

    async def wait_event(self, event_type: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event of that type (earlier events of other types are skipped; all are in ``all_events``)."""
        async def _next() -> dict[str, Any]:
            while True:
                event = await self.events.get()
                if event.get("type") == event_type:
                    return event
        try:
            return await asyncio.wait_for(_next(), timeout)
        except TimeoutError:
            seen = [e.get("type") for e in self.all_events]
            raise AssertionError(f"no {event_type} within {timeout}s; events so far: {seen}\n"
                                 f"{self.log()[-2000:]}") from None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()
            self._read_task = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        stop_process_group(proc, 5)

    async def aclose(self) -> None:
        writer = self._writer
        self.stop()
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def __aenter__(self) -> Baresip:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
