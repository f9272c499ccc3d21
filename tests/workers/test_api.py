"""Small helpers shared by the runners."""

from __future__ import annotations

import uuid

from eventrun.workers._api import new_request_id


def test_request_ids_are_version_4_uuids_in_text_form() -> None:
    ids = [new_request_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for rid in ids:
        parsed = uuid.UUID(rid)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == rid
    # every variant nibble (8, 9, a, b) shows up: the two random bits are kept
    assert {rid[19] for rid in ids} == set("89ab")
