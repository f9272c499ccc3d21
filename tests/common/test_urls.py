"""eventrun.common._urls: destination and store URLs without their secrets."""

from __future__ import annotations

import pytest

from eventrun.common._urls import public_destination, redact_url


@pytest.mark.parametrize(
    ("url", "public", "redacted"),
    [
        (
            "https://user:secret@hooks.example:8443/x?sig=abc#f",
            "https://hooks.example:8443/x",
            "https://user:***@hooks.example:8443/x",
        ),
        ("http://tok3n@h/x", "http://h/x", "http://***@h/x"),
        # passwords holding '/', '@' or ':' are never shown in part
        ("redis://u:pa/ss@w0rd@h:6379/0", "redis://h:6379/0", "redis://u:***@h:6379/0"),
        ("redis://:p:w@h/1", "redis://h/1", "redis://:***@h/1"),
        ("http://h:80/p?token=t", "http://h:80/p", "http://h:80/p"),
        ("local:orders-dlq", "local:orders-dlq", "local:orders-dlq"),
        ("kafka:main/orders", "kafka:main/orders", "kafka:main/orders"),
    ],
)
def test_secrets_are_removed(url: str, public: str, redacted: str) -> None:
    assert public_destination(url) == public
    assert redact_url(url) == redacted
