"""The ``nats:`` sink against a real server, and the trigger/connection models."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats_kit import make_stream
from nats_server import NatsServer
from pydantic import ValidationError

from eventrun.abc import OutMessage, SinkSpec
from eventrun.exceptions import ConfigError, SinkRejected, SinkUnavailable
from eventrun_nats._records import parse_reply
from eventrun_nats.config import NatsConnection, NatsTrigger
from eventrun_nats.sink import KEY_HEADER, NatsSink
from tests.fixtures._ports import free_port


def sink_spec(url: str, target: str) -> SinkSpec:
    return SinkSpec(
        url=f"nats:{target}", kind="nats", target=target, connection=NatsConnection(url=url)
    )


async def test_sink_publishes_with_acks_in_order(
    nats_server: NatsServer, nc: Client, stream_name: str
) -> None:
    await make_stream(nc, stream_name)
    messages = [
        OutMessage(f'{{"n": {i}}}'.encode(), key=f"k{i % 3}", attributes={"trigger": "t"})
        for i in range(300)
    ]
    async with NatsSink(sink_spec(nats_server.url, f"main/{stream_name}.out")) as sink:
        await sink.send(messages)
    sub = await nc.jetstream().pull_subscribe(f"{stream_name}.out", "check", stream=stream_name)
    got = []
    while len(got) < 300:
        got += await sub.fetch(300, timeout=2)
    assert [m.data for m in got] == [m.payload for m in messages]
    assert got[4].headers == {"trigger": "t", KEY_HEADER: "k1"}


async def test_sink_refuses_subject_without_stream(nats_server: NatsServer) -> None:
    async with NatsSink(sink_spec(nats_server.url, "main/nobody.listens")) as sink:
        with pytest.raises(SinkRejected, match=r"no JetStream stream captures 'nobody\.listens'"):
            await sink.send([OutMessage(b"{}")])


async def test_sink_server_down_is_unavailable() -> None:
    with pytest.raises(SinkUnavailable, match="cannot connect to NATS"):
        async with NatsSink(sink_spec(f"nats://127.0.0.1:{free_port()}", "main/x")):
            pass


def test_sink_needs_a_subject() -> None:
    with pytest.raises(ConfigError, match="nats:CONNECTION/SUBJECT"):
        NatsSink(sink_spec("nats://127.0.0.1:4222", "main"))


def test_trigger_model_keys() -> None:
    cfg = NatsTrigger.model_validate(
        {"url": "nats://h:4222", "stream": "S", "consumer": "c", "ack_wait": "2m"}
    )
    assert cfg.ack_wait == 120.0
    assert cfg.ordering == "subject"
    assert cfg.batch_size == 100
    assert cfg.max_receive_count is None
    queue = NatsTrigger.model_validate(
        {"connection": "main", "stream": "S", "consumer": "c", "ordering": "none", "max_deliver": 5}
    )
    assert queue.max_receive_count == 5


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"stream": "S", "consumer": "c"}, "exactly one of url"),
        ({"url": "nats://h:1", "connection": "m", "stream": "S", "consumer": "c"}, "exactly one"),
        ({"url": "http://h:1", "stream": "S", "consumer": "c"}, "nats://host:port"),
        ({"url": "nats://h:1", "stream": "S", "consumer": "c", "max_deliver": 3}, "ordering: none"),
        ({"url": "nats://h:1", "stream": "S", "consumer": "c", "queue": "q"}, "Extra inputs"),
        (
            {
                "url": "nats://h:1",
                "stream": "S",
                "consumer": "c",
                "ordering": "none",
                "subject_lanes": 4,
            },
            "subject_lanes applies to ordering: subject",
        ),
    ],
)
def test_trigger_model_rejects(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NatsTrigger.model_validate(config)


def test_connection_model_checks_every_server() -> None:
    NatsConnection.model_validate({"url": "nats://a:4222, nats://u:p@b:4222"})
    with pytest.raises(ValidationError, match="nats://host:port"):
        NatsConnection.model_validate({"url": "nats://a:4222,redis://b"})


def test_reply_subject_formats() -> None:
    """Both JetStream ack-subject forms: v1, and v2 with domain and account hash."""
    v1 = parse_reply("$JS.ACK.ORDERS.billing.3.42.57.1700000000123456789.9")
    v2 = parse_reply("$JS.ACK._.HASH.ORDERS.billing.3.42.57.1700000000123456789.9.rnd")
    for info in (v1, v2):
        assert (info.stream, info.consumer) == ("ORDERS", "billing")
        assert (info.delivered, info.stream_seq, info.consumer_seq) == (3, 42, 57)
        assert info.timestamp_ns == 1700000000123456789
    with pytest.raises(ValueError, match="not a JetStream reply subject"):
        parse_reply("_INBOX.abc")
