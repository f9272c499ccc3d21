"""The CLI's daemon client: an unreachable daemon is a DaemonError naming the address."""

from __future__ import annotations

import socket

import pytest

from eventrun.cli._client import get_json
from eventrun.exceptions import DaemonError


def test_get_json_from_an_unreachable_daemon_is_a_daemon_error() -> None:
    with socket.socket() as sock:  # a port that was just bound and closed: nobody listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(DaemonError, match=f"^cannot reach the daemon at {url}: "):
        get_json(url, "/status")
