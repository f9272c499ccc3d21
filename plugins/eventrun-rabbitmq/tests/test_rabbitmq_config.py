"""The plugin's config models and its entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from pydantic import ValidationError

from eventrun.exceptions import ConfigError
from eventrun_rabbitmq.config import (
    RabbitMQConnection,
    RabbitMQTrigger,
    redact_url,
    url_of,
    vhost_of,
)


def test_defaults_are_lambdas_for_amazon_mq() -> None:
    trigger = RabbitMQTrigger(url="amqp://u:p@h:5672/", queue="orders")
    assert trigger.batch_size == 100
    assert trigger.maximum_batching_window == 0.5
    assert trigger.maximum_concurrency == 1
    assert trigger.max_receive_count is None  # retry forever by default
    assert (
        RabbitMQTrigger(url="amqp://h/", queue="q", maximum_retry_attempts=2).max_receive_count == 3
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"queue": "q"}, "exactly one of url or connection"),
        ({"queue": "q", "url": "amqp://h/", "connection": "main"}, "exactly one"),
        ({"queue": "q", "url": "http://h/"}, "amqp://"),
        ({"queue": "q", "url": "amqp://h/", "batch_size": 10001}, "batch_size"),
        ({"queue": "", "url": "amqp://h/"}, "queue"),
        ({"queue": "q", "url": "amqp://h/", "bogus": 1}, "bogus"),
        ({"queue": "q", "url": "amqp://h/", "parallelization_factor": 2}, "stream triggers"),
        ({"queue": "q", "url": "amqp://h/", "bisect_batch_on_function_error": True}, "bisect"),
    ],
)
def test_invalid_triggers_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RabbitMQTrigger(**fields)


def test_bad_url_error_does_not_show_the_password() -> None:
    with pytest.raises(ValidationError) as info:
        RabbitMQConnection(url="http://user:s3cret@h/")
    (error,) = info.value.errors()
    assert "amqp://" in error["msg"]
    assert "s3cret" not in error["msg"]  # (the core's renderer redacts the input value)


def test_urls() -> None:
    assert redact_url("amqp://user:s3cret@h:5672/v") == "amqp://user:***@h:5672/v"
    assert redact_url("amqp://h/") == "amqp://h/"
    assert vhost_of("amqp://h:5672/") == "/"
    assert vhost_of("amqp://h:5672") == "/"
    assert vhost_of("amqp://h:5672/%2F") == "/"
    assert vhost_of("amqp://h:5672/shop") == "shop"
    connection = RabbitMQConnection(url="amqp://u:p@h/")
    assert connection.redacted_url() == "amqp://u:***@h/"
    trigger = RabbitMQTrigger(connection="main", queue="q")
    assert url_of(trigger, connection) == "amqp://u:p@h/"
    with pytest.raises(ConfigError, match=r"connections\.rabbitmq"):
        url_of(trigger, None)


def test_entry_points_register_every_group() -> None:
    for group, target in [
        ("eventrun.sources", "eventrun_rabbitmq.source:create"),
        ("eventrun.sinks", "eventrun_rabbitmq.sink:create"),
        ("eventrun.triggers", "eventrun_rabbitmq.config:RabbitMQTrigger"),
        ("eventrun.connections", "eventrun_rabbitmq.config:RabbitMQConnection"),
    ]:
        (ep,) = [ep for ep in entry_points(group=group) if ep.name == "rabbitmq"]
        assert ep.value == target
        assert ep.load() is not None
