"""Fixtures for the RabbitMQ plugin tests: one broker of the session's own.

``rabbit`` (session) is a :class:`rabbitmq_server.RabbitServer` on free loopback ports;
``rabbit_url`` (function) is its URL, and ``queue_name`` a fresh queue name per test
(tests declare their queues: durable classic or quorum as they need).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from rabbitmq_server import RabbitServer


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitServer]:
    server = RabbitServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def rabbit_url(rabbit: RabbitServer) -> str:
    rabbit.start()  # a test that stopped or killed it leaves it down
    return rabbit.url


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"
