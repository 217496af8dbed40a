"""A bare SIP endpoint on real loopback sockets whose events a test reads and answers by hand: a registrar that
challenges, a controller that sends offer-less INVITEs. Built on `Endpoint` and `Runtime` like the phone."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from callbridge.sip import TimerConfig
from callbridge.sip.endpoint import Endpoint
from callbridge.transport import LOOPBACK_NETWORKS, DestinationPolicy, Runtime, bind_udp


class RawUA:
    def __init__(self, endpoint: Endpoint, runtime: Runtime) -> None:
        self.endpoint = endpoint
        self.runtime = runtime

    @classmethod
    async def start(cls, *, auto_ack: bool = True, tcp: bool = False) -> RawUA:
        sock = bind_udp("127.0.0.1", 0)
        port = sock.getsockname()[1]
        endpoint = Endpoint("127.0.0.1", port, TimerConfig(), random.Random(port), user="raw", auto_ack=auto_ack)
        runtime = Runtime(endpoint, policy=DestinationPolicy(LOOPBACK_NETWORKS))
        await runtime.listen_udp(sock=sock)
        if tcp:
            await runtime.listen_tcp("127.0.0.1", port)
        return cls(endpoint, runtime)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.endpoint.port)

    def now(self) -> float:
        return self.runtime.now()

    async def next(self, kind: type, timeout: float = 5.0) -> Any:
        """The next core event of ``kind`` (others are skipped)."""
        async def find() -> Any:
            while True:
                event = await self.runtime.next_event()
                if isinstance(event, kind):
                    return event

        return await asyncio.wait_for(find(), timeout)

    async def close(self) -> None:
        await self.runtime.close()
