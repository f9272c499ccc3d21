"""URLs fit to show: the one place that strips secrets from a destination or store URL.

* :func:`public_destination` — for logs, metrics labels, the status page, the DLQ's
  ``local:eventrun-undeliverable`` entries: no userinfo, no query, no fragment (webhook
  URLs carry signatures and tokens there), e.g. ``https://hooks.example:8443/x``;
* :func:`redact_url` — for config messages and ``eventrun check``: the URL as written but
  with the password replaced by ``***`` (query and fragment dropped for the same reason).

Both find the userinfo by the *last* ``@`` of the authority-and-path, so a password that
holds ``/``, ``@`` or ``:`` is never shown in part (``urlsplit`` cuts the netloc at the
first ``/`` and would print the rest of such a password as the path). Imports nothing of
eventrun: config, sinks and the runtime all use it.
"""

from __future__ import annotations

__all__ = ["public_destination", "redact_url"]


def _split(url: str) -> tuple[str, str, str] | None:
    """(``scheme://``, userinfo or "", host-and-path) with query and fragment dropped;
    None for a URL without ``://`` (``local:q``, ``kafka:main/t``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    rest = rest.split("#", 1)[0]
    userinfo, at, hostpath = rest.rpartition("@")
    if not at:
        userinfo, hostpath = "", rest
    return f"{scheme}://", userinfo, hostpath.split("?", 1)[0]


def public_destination(url: str) -> str:
    """A destination URL fit for a log line, a label or a page: no userinfo, query or
    fragment; a URL without ``://`` (``local:q``, ``kafka:main/t``) as it is."""
    parts = _split(url)
    if parts is None:
        return url
    scheme, _, hostpath = parts
    return scheme + hostpath


def redact_url(url: str) -> str:
    """``url`` with its password (anything after the user name) shown as ``***``, and no
    query or fragment; a URL without ``://`` as it is."""
    parts = _split(url)
    if parts is None:
        return url
    scheme, userinfo, hostpath = parts
    if not userinfo:
        return scheme + hostpath
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"  # a lone user name may be a token
    return f"{scheme}{shown}@{hostpath}"
