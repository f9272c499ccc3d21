"""Make the template's resources exist locally before the daemon starts.

* Buckets: their directories (``buckets/NAME/`` beside the template) are created.
* Queues: each ``AWS::SQS::Queue`` that no binding maps to an existing queue is created
  on its SQS endpoint with its properties (``FifoQueue``, ``VisibilityTimeout``,
  ``RedrivePolicy``...), dead-letter queues first, when it is missing. Only on an
  endpoint override (a connection's ``endpoint_url``, ``AWS_ENDPOINT_URL_SQS`` or
  ``AWS_ENDPOINT_URL``): against real AWS nothing is created, the queues must exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import structlog

from eventrun.brokers import sqs as sqs_client
from eventrun.exceptions import ConfigError

from ._resources import QueueInfo
from ._translate import SamApp

__all__ = ["make_bucket_dirs", "prepare_local"]

log = structlog.get_logger("eventrun.sam")


def make_bucket_dirs(app: SamApp) -> None:
    """The directories standing for the template's buckets (``check -t`` makes them too,
    so the file-watch triggers validate)."""
    for directory in app.buckets:
        directory.mkdir(parents=True, exist_ok=True)


def _ordered(queues: list[QueueInfo]) -> list[QueueInfo]:
    """Dead-letter queues before the queues whose RedrivePolicy names them."""
    by_id = {q.logical_id: q for q in queues}
    out: list[QueueInfo] = []
    seen: set[str] = set()

    def visit(queue: QueueInfo) -> None:
        if queue.logical_id in seen:
            return
        seen.add(queue.logical_id)
        if queue.dead_letter in by_id:
            visit(by_id[queue.dead_letter])
        out.append(queue)

    for queue in queues:
        visit(queue)
    return out


def _endpoint(app: SamApp, connection: str | None, environ: Mapping[str, str]) -> str | None:
    if connection is not None:
        conn = app.loaded.config.connections.sqs.get(connection)
        if conn is not None and conn.endpoint_url:
            return conn.endpoint_url
        if conn is not None and conn.endpoint_url == "":
            return None
    return environ.get("AWS_ENDPOINT_URL_SQS") or environ.get("AWS_ENDPOINT_URL") or None


async def prepare_local(
    app: SamApp, environ: Mapping[str, str] | None = None, *, on_aws: bool = False
) -> None:
    """Create bucket directories and missing queues (see the module docstring);
    ``on_aws`` (``run --create-queues``) creates them on real AWS too."""
    env = os.environ if environ is None else environ
    make_bucket_dirs(app)
    wanted: list[tuple[QueueInfo | None, str, str | None]] = [
        (q, q.name, q.connection) for q in _ordered(app.queues) if not q.bound
    ]
    wanted += [(None, name, None) for name in app.extra_queues]
    for info, name, connection in wanted:
        endpoint = _endpoint(app, connection, env)
        if endpoint is None and not on_aws:
            log.info("sam.queue_expected", queue=name, reason="no endpoint override: real AWS")
            continue
        attributes = dict(info.attributes) if info is not None else {}
        await _ensure(app, connection, name, attributes)


async def _ensure(
    app: SamApp, connection: str | None, name: str, attributes: dict[str, str]
) -> None:
    conn: Any = app.loaded.config.connections.sqs.get(connection) if connection else None
    try:
        async with sqs_client.open_client(conn) as client:
            try:
                await client.get_queue_url(QueueName=name)
                log.info("sam.queue_exists", queue=name)
                return
            except Exception as exc:
                if sqs_client.classify(exc) != "missing":
                    raise
            await client.create_queue(QueueName=name, Attributes=attributes)
            log.info("sam.queue_created", queue=name, attributes=sorted(attributes))
    except Exception as exc:
        if sqs_client.classify(exc) is None:
            raise
        raise ConfigError(
            f"{app.template.filename}: cannot create queue {name!r} on its SQS endpoint: "
            f"{sqs_client.describe(exc)}"
        ) from None
