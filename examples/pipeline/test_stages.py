"""The pipeline's handlers tested with eventrun's pytest plugin: a user's test file.

It needs nothing but eventrun installed: the ``eventrun_app`` fixture runs this folder's
eventrun.yaml in-process, with the Redis streams in memory, so ``feed`` puts orders into
the ``ingest`` trigger and each stage's ``on_success`` carries them to the next one.
"""

from __future__ import annotations

ORDER = {"id": "o-1", "customer": " C7 ", "amount": "12.50"}


def test_an_order_goes_through_every_stage(eventrun_app):
    eventrun_app.feed("ingest", [ORDER])

    [valid] = eventrun_app.sent("redis:main/orders.valid")
    assert valid == {"id": "o-1", "customer": "c7", "amount": "12.50", "ts": None}
    [note] = eventrun_app.sent("redis:main/notifications")
    assert note["id"] == "o-1"
    assert note["text"].endswith("order o-1, EUR 12.50.")


def test_enrich_routes_by_region(eventrun_app):
    orders = [{"id": f"o-{n}", "customer": f"c{n}", "amount": "1"} for n in range(12)]
    eventrun_app.feed("ingest", orders)

    by_region = {
        region: {doc["id"] for doc in eventrun_app.sent(f"redis:main/enriched.{region}")}
        for region in ("eu", "us", "apac")
    }
    assert set().union(*by_region.values()) == {o["id"] for o in orders}
    for region, ids in by_region.items():
        for doc in eventrun_app.sent(f"redis:main/enriched.{region}"):
            assert doc["region"] == region, ids


def test_something_that_is_not_an_order_is_dropped(eventrun_app):
    eventrun_app.feed("ingest", ['"just a string"', ORDER])

    assert [doc["id"] for doc in eventrun_app.sent("redis:main/orders.valid")] == ["o-1"]
    assert eventrun_app.dlq("ingest") == []


def test_a_poison_order_ends_in_the_enrich_dlq_and_the_others_pass(eventrun_app):
    poison = {"id": "o-bad", "customer": "c1", "amount": "twelve"}
    eventrun_app.feed("ingest", [ORDER, poison, {**ORDER, "id": "o-2"}])

    notified = sorted(doc["id"] for doc in eventrun_app.sent("redis:main/notifications"))
    assert notified == ["o-1", "o-2"]
    [failure] = eventrun_app.dlq("enrich")
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    # the batch of three, then the failed record alone (resumed there) and its 2 retries
    assert failure["requestContext"]["approximateInvokeCount"] == 4


def test_a_handler_invoked_directly(eventrun_app):
    result = eventrun_app.invoke("notify", {"Records": []})

    assert result.ok
    assert result.payload == {"records": []}
