"""Fixtures of the HTTP tests: a `World` (the real service over in-memory ports, and the application) and an
in-process client of its application."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from http_world import World


@pytest.fixture
async def world() -> World:
    return World()


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://callbridge.test") as c:
        yield c
