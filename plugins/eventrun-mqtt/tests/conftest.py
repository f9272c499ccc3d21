"""Fixtures of the MQTT plugin's tests: a private Mosquitto per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mqtt_broker import Mosquitto, Publisher


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A Mosquitto of this test session (persistent, on a free loopback port)."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(mosquitto: Mosquitto) -> Mosquitto:
    """The session's broker, started again if a test stopped it."""
    mosquitto.start()
    return mosquitto


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[Publisher]:
    pub = Publisher(broker.port)
    try:
        yield pub
    finally:
        pub.close()
