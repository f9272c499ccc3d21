"""eventrun.server._guards: the Host allow-list, cross-site checks, session values, the sign-in
rate limit (the HTTP behaviour is tested against a real server in tests/test_api.py and
tests/test_web.py)."""

from __future__ import annotations

from eventrun.server._guards import (
    LoginLimiter,
    Sessions,
    admin_write_refusal,
    allowed_hosts,
    cross_origin,
)

TOKEN = b"guards-token-0123456"


def test_allowed_hosts_are_the_loopback_names_the_bind_address_and_configured_names() -> None:
    hosts = allowed_hosts("127.0.0.1", 9000, ["api.internal"])
    assert hosts is not None
    for ok in (b"127.0.0.1:9000", b"localhost:9000", b"[::1]:9000", b"api.internal"):
        assert ok in hosts
    assert b"api.internal:9000" in hosts
    assert b"evil.example:9000" not in hosts
    v6 = allowed_hosts("::1", 8080, [])
    assert v6 is not None
    assert b"[::1]:8080" in v6
    bound = allowed_hosts("10.0.0.5", 9000, [])
    assert bound is not None
    assert b"10.0.0.5:9000" in bound
    assert allowed_hosts("127.0.0.1", 9000, ["*"]) is None
    # every address, nothing configured: unknown names (tokens are required there)
    assert allowed_hosts("0.0.0.0", 9000, []) is None
    named = allowed_hosts("0.0.0.0", 9000, ["eventrun.svc"])
    assert named is not None
    assert b"eventrun.svc:9000" in named


def test_cross_origin_compares_origin_with_host() -> None:
    assert not cross_origin(None, b"127.0.0.1:9000")
    assert not cross_origin(b"http://127.0.0.1:9000", b"127.0.0.1:9000")
    assert not cross_origin(b"https://api.internal", b"api.internal")
    assert cross_origin(b"http://evil.example", b"127.0.0.1:9000")
    assert cross_origin(b"null", b"127.0.0.1:9000")


def test_admin_writes_need_the_header_or_json_and_no_foreign_origin() -> None:
    host = {b"host": b"127.0.0.1:9000"}
    assert admin_write_refusal({**host, b"content-type": b"text/plain"})
    assert admin_write_refusal({**host, b"content-type": b"application/x-www-form-urlencoded"})
    assert (
        admin_write_refusal({**host, b"content-type": b"application/json; charset=utf-8"}) is None
    )
    assert admin_write_refusal({**host, b"x-eventrun-request": b"1"}) is None
    foreign = {**host, b"x-eventrun-request": b"1", b"origin": b"http://evil.example"}
    assert admin_write_refusal(foreign)
    own_form = {**host, b"origin": b"http://127.0.0.1:9000"}
    assert admin_write_refusal(own_form)  # a DLQ write wants more than a form
    assert admin_write_refusal(own_form, form_ok=True) is None  # sign-in, sign-out


def test_session_values_expire_and_are_revoked() -> None:
    sessions = Sessions([TOKEN])
    value = sessions.issue(TOKEN)
    assert TOKEN.decode() not in value
    assert sessions.valid(value)
    assert not Sessions([TOKEN]).valid(value)  # another start, another secret
    assert not Sessions([b"another-token-012345"]).valid(value)
    sessions.revoke(value)
    assert not sessions.valid(value)
    expired = Sessions([TOKEN], ttl_s=-1)
    assert not expired.valid(expired.issue(TOKEN))
    for junk in ("", "x", "a.b.c", value.replace(".", "", 1)):
        assert not sessions.valid(junk)


def test_login_limiter_is_a_token_bucket_per_client() -> None:
    limiter = LoginLimiter(burst=3, per_s=0.001)
    for _ in range(3):
        assert limiter.blocked("10.0.0.1") == 0
        limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1") > 0
    assert limiter.blocked("10.0.0.2") == 0  # per client


def test_a_named_bind_address_is_accepted_as_it_is() -> None:
    hosts = allowed_hosts("eventrun.lan", 9000, [])
    assert hosts is not None
    assert {b"eventrun.lan", b"eventrun.lan:9000"} <= hosts
    assert b"[eventrun.lan]:9000" not in hosts  # brackets are for IPv6 addresses only


def test_an_origin_without_a_host_header_is_cross_origin() -> None:
    assert cross_origin(b"http://127.0.0.1:9000", None)
    assert admin_write_refusal({b"origin": b"http://127.0.0.1:9000", b"x-eventrun-request": b"1"})


def test_revoking_a_value_that_is_not_a_session_changes_nothing() -> None:
    sessions = Sessions([TOKEN])
    value = sessions.issue(TOKEN)
    for junk in ("", "x", "a.b", f"{value}x"):
        sessions.revoke(junk)
    assert sessions.valid(value)


def test_login_limiter_forgets_every_client_past_its_bound() -> None:
    limiter = LoginLimiter(burst=1, per_s=0.001, max_clients=2)
    limiter.failed("10.0.0.1")
    limiter.failed("10.0.0.2")
    assert limiter.blocked("10.0.0.1") > 0
    limiter.failed("10.0.0.3")  # a third address: the table is cleared, then counts it
    assert limiter.blocked("10.0.0.1") == 0
    assert limiter.blocked("10.0.0.2") == 0
    assert limiter.blocked("10.0.0.3") > 0
