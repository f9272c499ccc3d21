"""Every SQS call is bounded by the connection's ``connect_timeout`` and ``read_timeout``:
an endpoint that accepts requests and never answers (a half-open peer, made by the fault
proxy) costs a poll a few seconds, not aiobotocore's 30 s read timeout times two
attempts, and the next poll dials a new connection."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from eventrun.abc import SourceSpec
from eventrun.brokers import sqs as client_util
from eventrun.config import SqsConnection
from eventrun.exceptions import SourceUnavailable
from eventrun.sources.sqs import SqsPoller, create
from tests.fixtures.faultproxy import FaultProxy
from tests.fixtures.moto import REGION, MotoServer
from tests.sources.sqs.test_sqs import Trigger, collect, counts, send_all

pytestmark = pytest.mark.sqs


def _through(proxy: FaultProxy, **timeouts: Any) -> SqsConnection:
    return SqsConnection(
        endpoint_url=f"http://127.0.0.1:{proxy.port}",
        region=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        **timeouts,
    )


def _poller(connection: SqsConnection, queue_url: str) -> SqsPoller:
    spec = SourceSpec(
        kind="sqs",
        name="fn/sqs[0]",
        function="fn",
        config=Trigger(queue_url=queue_url),
        connection=connection,
    )
    return create(spec)


async def test_a_poll_against_a_silent_endpoint_gives_up_after_its_timeouts(
    moto: MotoServer, sqs_client: Any, fault_proxy: type[FaultProxy]
) -> None:
    proxy = fault_proxy(moto.port).start()
    queue = moto.create_queue()
    connection = _through(proxy, read_timeout=2, connect_timeout=1)
    bound = client_util.request_bound_s(connection)
    assert bound == 2 * (1 + 2)
    async with _poller(connection, queue.url) as poller:
        proxy.mode = "blackhole"
        started = time.monotonic()
        with anyio.fail_after(bound + 10), pytest.raises(SourceUnavailable):
            await poller.poll(10)
        waited = time.monotonic() - started
        proxy.mode = "pass"  # the hung connections stay dead: the next calls dial anew
        await send_all(sqs_client, queue, ["after"])
        with anyio.fail_after(bound + 10):
            [after] = await collect(poller, 1)
        await poller.ack([after])
    assert 2 <= waited <= bound + 1, waited  # the read timeout, not aiobotocore's 30 s
    assert after.plain_event()["body"] == "after"
    assert await counts(sqs_client, queue) == (0, 0)


async def test_the_connection_s_timeouts_reach_the_client() -> None:
    connection = SqsConnection(region=REGION, read_timeout="9s", connect_timeout="2s")
    async with client_util.open_client(connection) as client:
        assert client.meta.config.read_timeout == 9
        assert client.meta.config.connect_timeout == 2
    async with client_util.open_client(SqsConnection(region=REGION)) as client:
        assert client.meta.config.read_timeout == client_util.READ_TIMEOUT_S == 6
        assert client.meta.config.connect_timeout == client_util.CONNECT_TIMEOUT_S == 5


def test_a_read_timeout_within_the_long_poll_is_rejected() -> None:
    with pytest.raises(ValidationError, match="read_timeout"):
        SqsConnection(region=REGION, read_timeout=1)
