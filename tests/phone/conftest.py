"""Fixtures of the phone tests: phones on loopback real sockets, over UDP and over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from callbridge.phone import Phone

PhoneFactory = Callable[..., Awaitable[Phone]]


@pytest.fixture(params=["udp", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_phone(transport: str) -> AsyncIterator[PhoneFactory]:
    phones: list[Phone] = []

    async def make(user: str, **options: Any) -> Phone:
        options.setdefault("transport", transport)
        phone = await Phone.start(host="127.0.0.1", port=0, user=user, name=f"test-{user}", **options)
        phones.append(phone)
        return phone

    yield make
    for phone in phones:
        await phone.close()
