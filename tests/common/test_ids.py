"""Request ids (eventrun.common._ids)."""

from __future__ import annotations

import uuid

from eventrun.common._ids import new_request_id


def test_request_ids_are_version_4_uuids_in_text_form() -> None:
    ids = [new_request_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for rid in ids:
        parsed = uuid.UUID(rid)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == rid
    # every variant nibble (8, 9, a, b) shows up: the two random bits are kept
    assert {rid[19] for rid in ids} == set("89ab")


def test_a_forked_child_never_hands_out_its_parents_ids() -> None:
    import os

    new_request_id()  # the pool now holds ids the parent has not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "\n".join(new_request_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = set(f.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {new_request_id() for _ in range(100)}
    assert len(child) == 100
    assert not child & parent
