"""The three stages of the pipeline example: ingest -> enrich -> notify.

Plain Lambda handlers. They read both event shapes eventrun delivers for streams (Redis
Streams' Kinesis-like ``{"Records": [...]}`` and Kafka's ``{"records": {"topic-0":
[...]}}``), so one module serves both configs. Each returns ``{"records": [...]}``: the
runtime publishes every item to the trigger's ``on_success``, keyed like its input, before
it acknowledges the input.

* ``ingest`` checks and normalises raw orders; a record that is not an order is dropped
  (its slot in the aligned ``records`` list is ``None``: acknowledged, nothing published).
* ``enrich`` looks the customer up (name, tier, region) and prices the order in cents. A
  record it cannot handle is reported in ``batchItemFailures``; ``records`` then holds one
  item per *succeeded* input, in order. The config routes each output by ``region``.
* ``notify`` writes the message a customer would get.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

REGIONS = ("eu", "us", "apac")
TIERS = ("bronze", "silver", "gold")


def inputs(event: dict[str, Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(itemIdentifier, decoded JSON payload) of every record of a stream batch."""
    if "Records" in event:  # Redis Streams
        for record in event["Records"]:
            stream = record["redis"]
            yield stream["sequenceNumber"], json.loads(base64.b64decode(stream["data"]))
    else:  # Kafka: records grouped by "topic-partition", in offset order
        for shard, records in event["records"].items():
            for record in records:
                ident = {"partition": shard, "offset": record["offset"]}
                yield ident, json.loads(base64.b64decode(record.get("value", "")) or "null")


def customer(customer_id: str) -> dict[str, str]:
    """The customer table (deterministic, so every stage and test agrees on it)."""
    n = zlib.crc32(customer_id.encode())
    return {
        "name": customer_id.replace("c", "Customer ", 1),
        "tier": TIERS[n % len(TIERS)],
        "region": REGIONS[n % len(REGIONS)],
    }


def parse_amount(text: str) -> Decimal:
    """An amount in EUR, e.g. "12.50"."""
    return Decimal(text)


def ingest(event: dict[str, Any], context: Any) -> dict[str, Any]:
    out: list[dict[str, Any] | None] = []
    for _ident, doc in inputs(event):
        if not isinstance(doc, dict) or not {"id", "customer", "amount"} <= doc.keys():
            out.append(None)  # not an order: acknowledged, nothing published
            continue
        out.append(
            {
                "id": doc["id"],
                "customer": str(doc["customer"]).strip().lower(),
                "amount": str(doc["amount"]).strip(),
                "ts": doc.get("ts"),
            }
        )
    return {"records": out}


def enrich(event: dict[str, Any], context: Any) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for ident, doc in inputs(event):
        try:
            cents = int(parse_amount(doc["amount"]) * 100)
        except ArithmeticError as exc:  # decimal.InvalidOperation: a poison record
            print(f"cannot price order {doc.get('id')}: amount {doc.get('amount')!r}: {exc!r}")
            failures.append({"itemIdentifier": ident})
            continue
        out.append({**doc, **customer(doc["customer"]), "amount_cents": cents})
    return {"records": out, "batchItemFailures": failures}


def notify(event: dict[str, Any], context: Any) -> dict[str, Any]:
    out = []
    for _ident, doc in inputs(event):
        euros = f"{doc['amount_cents'] / 100:.2f}"
        out.append(
            {
                "id": doc["id"],
                "customer": doc["customer"],
                "region": doc["region"],
                "text": f"Hello {doc['name']} ({doc['tier']}): order {doc['id']}, EUR {euros}.",
                "ts": doc.get("ts"),
                "notified_at": time.time(),
            }
        )
    return {"records": out}
