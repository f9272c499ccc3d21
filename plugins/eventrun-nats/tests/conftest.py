"""Fixtures of the NATS plugin's tests: a session ``nats-server -js`` of our own, a fresh
stream per test, and helpers to publish and inspect."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats_server import NatsServer


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats-store"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A server of this test alone (for restarts and kills)."""
    server = NatsServer(tmp_path / "nats-store")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stream_name() -> str:
    return f"S{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()
