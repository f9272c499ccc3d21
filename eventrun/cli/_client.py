"""The CLI's client for a running daemon (Invoke API, status, DLQ), over httpx.

Every request carries ``X-Eventrun-Request: 1`` (what the admin API asks of a request
that changes state, see docs/security.md). The bearer token comes from ``EVENTRUN_TOKEN``,
or the first of ``EVENTRUN_TOKENS``.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from eventrun.exceptions import DaemonError

__all__ = ["client", "invoke_remote", "token_from_env"]


def token_from_env() -> str | None:
    token = os.environ.get("EVENTRUN_TOKEN")
    if token:
        return token
    tokens = [t.strip() for t in os.environ.get("EVENTRUN_TOKENS", "").split(",") if t.strip()]
    return tokens[0] if tokens else None


def client(url: str, timeout_s: float = 930.0) -> httpx.Client:
    # the admin API refuses a state-changing request without it (eventrun.server._guards)
    headers = {"X-Eventrun-Request": "1"}
    token = token_from_env()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)


def invoke_remote(
    url: str, function: str, payload: bytes, *, is_async: bool = False
) -> tuple[int, str, bool]:
    """POST to the Invoke API; return (status, body text, handler failed)."""
    kind = "Event" if is_async else "RequestResponse"
    try:
        with client(url) as http:
            response = http.post(
                f"/2015-03-31/functions/{function}/invocations",
                content=payload,
                headers={"X-Amz-Invocation-Type": kind},
            )
    except httpx.HTTPError as exc:
        raise DaemonError(f"cannot reach the daemon at {url}: {exc}") from exc
    return _checked(response, url)


def _checked(response: httpx.Response, url: str) -> tuple[int, str, bool]:
    if response.status_code >= 400:
        raise DaemonError(f"{url} answered {response.status_code}: {response.text.strip()[:500]}")
    failed = "X-Amz-Function-Error" in response.headers
    return response.status_code, response.text, failed


def get_json(url: str, path: str) -> Any:
    try:
        with client(url, timeout_s=10) as http:
            response = http.get(path)
    except httpx.HTTPError as exc:
        raise DaemonError(f"cannot reach the daemon at {url}: {exc}") from exc
    _checked(response, url)
    return response.json()
