"""Abuse of the daemon's HTTP server and inputs (complements tests/test_api.py, which has
the basic 401/413/400 cases and the non-loopback refusal, and
tests/sources/test_filewatch.py, which refuses a file symlink pointing outside the root).

* odd and hostile Authorization headers on every guarded endpoint;
* a body declared with a huge Content-Length and never sent, half-sent bodies;
* slowloris: sockets dribbling headers must not block other clients;
* file-watch: a symlinked *directory* (and relative ``..`` links) leading outside the root;
* secrets (bearer tokens, redis URL passwords, kafka SASL passwords, SQS secret keys)
  never in the daemon's logs, /status, /openapi.json or error messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import selectors
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from structlog.testing import capture_logs

from eventrun.config import parse_config
from eventrun.exceptions import ConfigError
from tests._daemon import Daemon, daemon
from tests._runtime_kit import running_app, write_app
from tests.chaos._kit import wait
from tests.fixtures._ports import free_port

TOKEN = "abuse-token-5f2c9e"
INVOKE = "/2015-03-31/functions/{}/invocations"
APP_YAML = """
server: {allowed_hosts: [x], auth: {tokens_env: EVENTRUN_ABUSE_TOKENS}}
store: {url: "sqlite:///state.db"}
functions:
  echo:
    handler: fns:echo
    timeout: 5s
    triggers:
      - http: {path: /guarded, methods: [GET]}
"""
FNS = """
def echo(event, context):
    return event
"""


@dataclass
class Server:
    url: str
    port: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("abuse")
    config = write_app(root, APP_YAML, {"fns.py": FNS})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVENTRUN_ABUSE_TOKENS", TOKEN)
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(running_app(config)) as runtime,
        ):
            assert runtime.bound_port is not None
            yield Server(f"http://127.0.0.1:{runtime.bound_port}", runtime.bound_port)


def _raw(port: int, data: bytes, *, read: bool = True, timeout_s: float = 10) -> bytes:
    """Send raw bytes; return what the server answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out:
                    head, _, body = out.partition(b"\r\n\r\n")
                    length = [
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ]
                    if length and len(body) >= length[0]:
                        break
        except TimeoutError:
            pass
        return out


# -- tokens ---------------------------------------------------------------------------

BAD_AUTH = [
    "",
    "Bearer",
    "Bearer ",
    f"Bearer  {TOKEN}x",
    f"bearer{TOKEN}",
    f"Basic {TOKEN}",
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN}{TOKEN}",
    "Bearer " + "A" * 20000,
    "Bearer \u00e9\u00e8",
    f"Bearer {TOKEN},{TOKEN}",
]
GUARDED = [("POST", INVOKE.format("echo")), ("GET", "/status"), ("GET", "/metrics"),
           ("GET", "/guarded"), ("POST", INVOKE.format("nope"))]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_bad_tokens_are_401_everywhere(server: Server, method: str, path: str) -> None:
    """Raw requests: an HTTP client library would refuse to send some of these headers."""

    def send(auth: str | None) -> bytes:
        line = f"Authorization: {auth}\r\n" if auth is not None else ""
        raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\n{line}Content-Length: 2\r\n\r\n{{}}"
        return _raw(server.port, raw.encode("utf-8"))

    for auth in [None, *BAD_AUTH]:
        answer = send(auth)
        assert answer[:12] in (b"HTTP/1.1 401", b"HTTP/1.1 431", b"HTTP/1.1 400"), (
            (auth or "")[:40],
            answer[:200],
        )
        assert TOKEN.encode() not in answer
    answer = send(f"Bearer {TOKEN}")
    assert answer[:12] in (b"HTTP/1.1 200", b"HTTP/1.1 404"), answer[:300]  # 404: unknown fn


# -- bodies ---------------------------------------------------------------------------


def test_huge_declared_content_length_is_refused_without_waiting(server: Server) -> None:
    head = (
        f"POST {INVOKE.format('echo')} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000000000\r\n\r\n"
    ).encode()
    began = time.monotonic()
    answer = _raw(server.port, head, timeout_s=10)
    took = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert took < 5, f"the server waited {took:.1f}s for a body it had already refused"


def test_huge_declared_content_length_on_a_function_url(server: Server) -> None:
    head = (
        f"GET /guarded HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Length: 1000000000000\r\n\r\n"
    ).encode()
    answer = _raw(server.port, head, timeout_s=10)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_malformed_requests_get_4xx_not_5xx(server: Server) -> None:
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    cases = [
        b"GARBAGE\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        (f"POST {INVOKE.format('echo')} HTTP/1.1\r\nHost: x\r\n{auth}"
         "Content-Length: 4\r\n\r\n\xff\xfe\x00\x01").encode("latin-1"),
        (f"POST {INVOKE.format('%00%2e%2e%2f')} HTTP/1.1\r\nHost: x\r\n{auth}"
         "Content-Length: 2\r\n\r\n{}").encode(),
        (f"POST {INVOKE.format('e' * 5000)} HTTP/1.1\r\nHost: x\r\n{auth}"
         "Content-Length: 2\r\n\r\n{}").encode(),
    ]  # fmt: skip
    for raw in cases:
        answer = _raw(server.port, raw, timeout_s=10)
        assert answer.startswith(b"HTTP/1.1 4"), (raw[:80], answer[:200])
    # an undecodable client context is ignored (the invocation runs without one)
    for context in ("!!notbase64!!", "bm90IGpzb24="):
        raw = (
            f"POST {INVOKE.format('echo')} HTTP/1.1\r\nHost: x\r\n{auth}"
            f"X-Amz-Client-Context: {context}\r\nContent-Length: 2\r\n\r\n{{}}"
        ).encode()
        assert _raw(server.port, raw).startswith(b"HTTP/1.1 200")


def test_half_sent_body_does_not_block_others(server: Server) -> None:
    head = (
        f"POST {INVOKE.format('echo')} HTTP/1.1\r\nHost: x\r\n"
        f'Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{"a": '
    ).encode()
    stuck = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    try:
        for s in stuck:
            s.sendall(head)
        began = time.monotonic()
        with httpx.Client(base_url=server.url, timeout=10) as http:
            r = http.post(
                INVOKE.format("echo"), json={"ok": 1}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
        assert (r.status_code, r.json()) == (200, {"ok": 1})
        assert time.monotonic() - began < 3
    finally:
        for s in stuck:
            s.close()


# -- slow clients ---------------------------------------------------------------------


def test_slowloris_does_not_block_other_clients(server: Server) -> None:
    request = f"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
    dribblers = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(30)]
    latencies = []
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for i in range(min(len(request), 40)):
                for s in dribblers:
                    # the server may drop a dribbler; that is fine too
                    with contextlib.suppress(OSError):
                        s.sendall(request[i : i + 1])
                began = time.monotonic()
                r = http.get("/healthz")
                latencies.append(time.monotonic() - began)
                assert r.status_code == 200
                time.sleep(0.05)  # the dribble rate is the point of the test
    finally:
        for s in dribblers:
            s.close()
    print(f"slowloris: 30 dribbling sockets, worst /healthz latency {max(latencies) * 1000:.0f} ms")
    # A server held up by the dribblers would answer only once a dribbled request is
    # complete (never here: 40 of its bytes are sent, 50 ms apart) or time the client
    # out; half the dribble's duration leaves a busy machine its scheduling delays.
    assert max(latencies) < min(len(request), 40) * 0.05 / 2


# -- connection exhaustion, head limits (eventrun.server._httpguard) ------------------------

PROBE_YAML = """
server: {auth: {mode: none}%s}
store: {url: "sqlite:///state.db"}
functions:
  echo:
    handler: fns:echo
"""


@contextlib.contextmanager
def _in_process(root: Path, server_keys: str = "") -> Iterator[int]:
    config = write_app(root, PROBE_YAML % server_keys, {"fns.py": FNS})
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(running_app(config)) as runtime,
    ):
        assert runtime.bound_port is not None
        yield runtime.bound_port


@contextlib.contextmanager
def _uvicorn_records() -> Iterator[list[logging.LogRecord]]:
    """What uvicorn logs (its ``uvicorn.error`` logger) while the block runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, logger = Keep(level=logging.DEBUG), logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _status(port: int, path: str, source: str = "127.0.0.1") -> int:
    """One GET on a new connection from ``source`` (any 127/8 address is local)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, f"{path}: closed without an answer"
            head += chunk
    return int(head.split(b" ", 2)[1])


def _idle(port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    return [
        socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        for _ in range(count)
    ]


def _wait_closed(sockets: list[socket.socket], timeout_s: float) -> list[bytes]:
    """Read every socket to EOF (or reset); what each received. Fails after timeout_s."""
    selector = selectors.DefaultSelector()
    got: dict[socket.socket, bytes] = {}
    for s in sockets:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
        got[s] = b""
    deadline = time.monotonic() + timeout_s
    open_now = len(sockets)
    while open_now:
        left = deadline - time.monotonic()
        assert left > 0, f"{open_now} of {len(sockets)} sockets still open after {timeout_s} s"
        for key, _ in selector.select(min(left, 1.0)):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            try:
                chunk = ready.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                got[ready] += chunk
            else:
                selector.unregister(ready)
                open_now -= 1
    selector.close()
    return [got[s] for s in sockets]


def test_idle_sockets_past_the_connection_limit_leave_probes_answering(tmp_path: Path) -> None:
    """70 sockets that send nothing against max_connections 64: requests get 503 but the
    probes answer; the head deadline (0.5 s) closes every idle socket, then all is served.
    Before: the idle sockets were never closed and /healthz answered 503 too."""
    keys = ", max_connections: 64, request_head_timeout: 0.5s"
    with (
        capture_logs() as logs,
        _uvicorn_records() as uvicorn_lines,
        _in_process(tmp_path, keys) as port,
    ):
        idle = _idle(port, 70)
        try:
            # accepted in order: these connections come after all 70 idle ones
            assert [_status(port, "/openapi.json") for _ in range(20)] == [503] * 20
            assert _status(port, "/healthz") == 200
            assert _status(port, "/readyz") == 200
            assert _wait_closed(idle, 15) == [b""] * 70
            assert _status(port, "/openapi.json") == 200
        finally:
            for s in idle:
                s.close()
    # 20 refusals, one log line (rate-limited), none of uvicorn's own per request
    refusals = [e for e in logs if e["event"] == "server.connection_limit"]
    assert [(e["limit"], e["peer"]) for e in refusals] == [(64, "127.0.0.1")]
    assert [r.getMessage() for r in uvicorn_lines if "concurrency" in r.getMessage()] == []


def test_default_limits_against_2100_idle_sockets(tmp_path: Path) -> None:
    """The defaults (2048 connections, 256 per client, 10 s head deadline) against more
    idle sockets than the limit, from nine local addresses: 127.0.0.1 gets 256 and the
    rest of its sockets are refused at once; the probes answer throughout; every idle
    socket is closed at the head deadline."""
    with _in_process(tmp_path) as port:
        began = time.monotonic()
        mine = _idle(port, 300)
        others = [s for i in range(2, 10) for s in _idle(port, 240, f"127.0.0.{i}")]
        try:
            assert _status(port, "/openapi.json", "127.0.0.20") == 503  # 256 + 1920 held
            assert _status(port, "/healthz", "127.0.0.20") == 200
            assert _status(port, "/readyz", "127.0.0.21") == 200
            refused = mine[256:]
            answers = _wait_closed(refused, 10)
            assert all(a.startswith(b"HTTP/1.1 503") for a in answers), answers[0]
            assert time.monotonic() - began < 9, "refused at once, not at the head deadline"
            assert _wait_closed(mine[:256] + others, 30) == [b""] * (256 + 1920)
            assert time.monotonic() - began >= 10
            assert _status(port, "/openapi.json", "127.0.0.20") == 200
        finally:
            for s in mine + others:
                s.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _flood_head(port: int, first: bytes, filler: bytes, total: int) -> bytes:
    """Send ``first`` and up to ``total`` bytes of ``filler`` (stopping as soon as the
    server answers), then end the head; return the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(first)
        chunk = filler * (65536 // len(filler))
        sent = 0
        with contextlib.suppress(OSError):  # refused mid-way: the server closed it
            while sent < total and not select.select([s], [], [], 0)[0]:
                s.sendall(chunk)
                sent += len(chunk)
            s.sendall(b"\r\n\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            while data := s.recv(65536):
                answer += data
                if b"\r\n\r\n" in answer:
                    break
        return answer


def test_a_huge_head_is_431_and_does_not_grow_the_daemon(tmp_path: Path) -> None:
    """32 MB of ``X-Pad`` headers, then one 32 MB header, to /healthz: each is refused with
    431 soon after 64 KiB and the daemon's memory stays put. Before: answered 200 after
    the daemon had held the whole head (~0.8 bytes of RSS per byte sent)."""
    config = write_app(tmp_path, PROBE_YAML % "", {"fns.py": FNS})
    with daemon(config) as d:
        assert d.proc is not None
        for _ in range(3):
            assert _status(d.port, "/healthz") == 200
        before = _rss_kib(d.proc.pid)
        first = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
        many = _flood_head(d.port, first, b"X-Pad: " + b"a" * 1000 + b"\r\n", 32 << 20)
        one = _flood_head(d.port, first + b"X-Pad: ", b"a" * 1024, 32 << 20)
        grown = _rss_kib(d.proc.pid) - before
        assert _status(d.port, "/healthz") == 200
    assert many.startswith(b"HTTP/1.1 431"), many[:100]
    assert one.startswith(b"HTTP/1.1 431"), one[:100]
    print(f"huge heads: daemon RSS grew {grown} KiB")
    assert grown < 8 * 1024, f"the daemon grew by {grown} KiB"


# -- file-watch path safety -----------------------------------------------------------


def test_filewatch_never_follows_links_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    (outside / "deep" / "secret2.txt").write_text("secret")
    app = tmp_path / "app"
    inbox = app / "inbox"
    (inbox / "sub").mkdir(parents=True)
    # present at startup: a symlinked directory and a relative ``..`` link
    (inbox / "dirlink").symlink_to(outside, target_is_directory=True)
    (inbox / "sub" / "dotdot.txt").symlink_to(Path("..") / ".." / ".." / "outside" / "secret.txt")
    (inbox / "ok-before.txt").write_text("fine")
    ledger = tmp_path / "keys.jsonl"
    yaml = f"""
        store: {{url: "sqlite:///state.db"}}
        functions:
          watch:
            handler: fns:watch
            environment: {{KEYS: "{ledger}"}}
            triggers:
              - filewatch: {{path: inbox, recursive: true, settle: 100ms, on_startup: existing}}
    """
    fns = """
        import json, os

        def watch(event, context):
            with open(os.environ["KEYS"], "a") as f:
                for r in event["Records"]:
                    f.write(json.dumps(r["s3"]["object"]["key"]) + "\\n")
    """
    config = write_app(app, yaml, {"fns.py": fns})
    daemon = Daemon(config).start()
    try:
        # created while running: another directory link, a link inside it, a file via ..
        (inbox / "later").symlink_to(outside / "deep", target_is_directory=True)
        (outside / "deep" / "new.txt").write_text("secret")
        (inbox / "sub" / "up.txt").symlink_to(Path("..") / ".." / "fns.py")
        (inbox / "ok-after.txt").write_text("fine")

        def keys() -> list[str]:
            if not ledger.exists():
                return []
            return [json.loads(line) for line in ledger.read_text().splitlines()]

        wait(lambda: {"ok-before.txt", "ok-after.txt"} <= set(keys()), 30, "the good files")
        refused = len(daemon.events("filewatch.path_refused"))
        assert daemon.terminate(30) == 0
    finally:
        daemon.stop()
    seen = keys()
    assert all(".." not in key and not key.startswith("/") for key in seen), seen
    leaked = [
        k for k in seen if "secret" in k or "new.txt" in k or k.startswith(("dirlink", "later"))
    ]
    assert not leaked, f"delivered paths outside the root: {leaked}"
    assert "sub/up.txt" not in seen, seen
    assert "sub/dotdot.txt" not in seen, seen
    print(f"filewatch: delivered {sorted(seen)}, refused {refused} paths")


# -- secrets --------------------------------------------------------------------------

SECRETS = {
    "token": "tok-7d1e0c4b9a-5f3e81",
    "redis": "redispw-3b8f1a",
    "sasl": "saslpw-9c2d7e",
    "sqs": "sqssecret-5e4a1f",
}


def test_secrets_never_leak(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens here: every connection fails
    yaml = f"""
        connections:
          redis: {{main: {{url: "redis://user:{SECRETS["redis"]}@127.0.0.1:{dead}/0"}}}}
          kafka:
            main:
              bootstrap_servers: "127.0.0.1:{dead}"
              security_protocol: SASL_PLAINTEXT
              sasl_mechanism: PLAIN
              sasl_plain_username: u
              sasl_plain_password: "{SECRETS["sasl"]}"
          sqs:
            main:
              endpoint_url: "http://127.0.0.1:{dead}"
              aws_access_key_id: AKIDEXAMPLE
              aws_secret_access_key: "{SECRETS["sqs"]}"
        server: {{auth: {{tokens_env: ABUSE_TOKENS}}}}
        store: {{url: "sqlite:///state.db"}}
        functions:
          fn:
            handler: fns:echo
            triggers:
              - redis_streams: {{connection: main, streams: [s], on_failure: "redis:main/dlq"}}
              - kafka: {{connection: main, topics: [t]}}
              - sqs: {{connection: main, queue_url: "http://127.0.0.1:{dead}/123/q"}}
    """
    config = write_app(tmp_path, yaml, {"fns.py": FNS})
    daemon = Daemon(config, env={"ABUSE_TOKENS": SECRETS["token"]})
    daemon.start(wait_ready=False)
    texts = []
    try:
        auth = {"Authorization": f"Bearer {SECRETS['token']}"}
        with httpx.Client(base_url=daemon.url, timeout=10) as http:

            def up() -> bool:
                try:
                    return http.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait(up, 60, "the HTTP server")
            for kind in ("redis", "kafka", "sqs"):
                daemon.wait_for(
                    lambda e, k=kind: (
                        e.get("level") in ("warning", "error") and k in json.dumps(e).lower()
                    ),
                    60,
                )
            for path in ("/status", "/openapi.json", "/metrics", "/readyz"):
                texts.append(http.get(path, headers=auth).text)
            texts.append(http.post(INVOKE.format("fn"), headers=auth, content=b"{").text)
            texts.append(http.get("/status", headers={"Authorization": "Bearer wrong"}).text)
        daemon.terminate(30)
    finally:
        daemon.stop()
    logs = "\n".join(daemon.raw)
    assert len(daemon.raw) > 5
    for name, secret in SECRETS.items():
        assert secret not in logs, f"the {name} secret is in the daemon's log"
        for text in texts:
            assert secret not in text, f"the {name} secret is in an API response"
    # config errors never echo secrets either (bad values next to them)
    for bad in (
        yaml.replace("security_protocol: SASL_PLAINTEXT", "security_protocol: 5"),
        yaml.replace("aws_access_key_id: AKIDEXAMPLE", "aws_access_key_id: [1]"),
        yaml.replace("redis: {main: {url:", "redis: {main: {bogus: 1, url:"),
        yaml.replace("redis: {main: {", "redis: [{").replace('/0"}}', '/0"}]'),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(_dedent(bad), filename="eventrun.yaml", environ={})
        message = "\n".join(info.value.problems)
        for name, secret in SECRETS.items():
            assert secret not in message, f"the {name} secret is in a config error: {message}"
    print(f"secrets: {len(daemon.raw)} log lines and {len(texts)} responses checked")


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text)
