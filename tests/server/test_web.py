"""The daemon's web status page in a real headless browser (Debian's chromium driven by
Selenium through the system chromedriver; nothing is downloaded).

It signs in with ``?token=`` (the token leaves the URL, an HttpOnly SameSite=Strict cookie
stays), shows the functions, triggers and a DLQ entry, its script polls /status, and the
Redrive button re-invokes the dead-lettered event exactly once. A missing chromium is a
failure that says how to install it, never a skip."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from eventrun.server._guards import SESSION_TTL_S, LoginLimiter
from tests._daemon import Daemon, daemon
from tests._runtime_kit import running_app, write_app
from tests.fixtures._ports import free_port

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

HANDLERS = """
import os, pathlib

def work(event, context):
    ident = event.get("id", "tick")
    broken = pathlib.Path(os.environ["BROKEN"])
    if broken.exists() and ident in broken.read_text().split():
        raise RuntimeError(f"{ident} is broken")
    with open(os.environ["LEDGER"], "a") as f:
        f.write(f"{context.function_name} {ident}\\n")
    return {"done": ident}
"""

CONFIG = """
store: {{url: "sqlite:///state.db"}}
server: {{port: {port}}}
functions:
  orders:
    handler: handlers:work
    concurrency: 4
    maximum_retry_attempts: 0
    environment: {{LEDGER: "{root}/ledger.txt", BROKEN: "{root}/broken.txt"}}
  nightly:
    handler: handlers:work
    environment: {{LEDGER: "{root}/ledger.txt", BROKEN: "{root}/broken.txt"}}
    triggers:
      - cron: {{schedule: "0 3 * * *"}}
"""

TOKEN = "web-test-token-0123"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    if chromium is None or driver is None:
        pytest.fail(
            "the web page test needs Debian's chromium and chromedriver: "
            "apt-get install -y chromium chromium-driver",
            pytrace=False,
        )
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def ledger(root: Path) -> Counter[str]:
    path = root / "ledger.txt"
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.05)


def _prepare(d: Daemon) -> None:
    """Some successes, one sync error, and one async failure in local:orders-dlq."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=d.url, headers=auth, timeout=30) as http:
        for n in range(3):
            r = http.post("/2015-03-31/functions/orders/invocations", json={"id": f"ok{n}"})
            assert r.status_code == 200
        http.post("/2015-03-31/functions/orders/invocations", json={"id": "w-sync"})
        r = http.post(
            "/2015-03-31/functions/orders/invocations",
            json={"id": "w1"},
            headers={"X-Amz-Invocation-Type": "Event"},
        )
        assert r.status_code == 202
        _wait(
            lambda: http.get("/dlq").json()["queues"].get("local:orders-dlq") == 1,
            "the failure reached local:orders-dlq",
        )


def test_status_page_shows_functions_and_redrives(tmp_path: Path, browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    port = free_port()
    config = tmp_path / "eventrun.yaml"
    config.write_text(CONFIG.format(port=port, root=tmp_path))
    (tmp_path / "handlers.py").write_text(HANDLERS)
    (tmp_path / "broken.txt").write_text("w1 w-sync")
    with daemon(config, port=port, env={"EVENTRUN_TOKENS": TOKEN}) as d:
        _prepare(d)
        (tmp_path / "broken.txt").unlink()  # fixed: the redrive will succeed
        wait = WebDriverWait(driver, 20)

        # without the token: the sign-in form, nothing else
        driver.get(d.url + "/")
        assert driver.find_element(By.ID, "token")
        assert "orders" not in driver.page_source

        # ?token= once: a session cookie, and the token is gone from the address bar
        driver.get(f"{d.url}/?token={TOKEN}")
        wait.until(ec.presence_of_element_located((By.ID, "functions")))
        assert TOKEN not in driver.current_url
        (cookie,) = driver.get_cookies()
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert TOKEN not in cookie["value"]
        rows = driver.find_elements(By.CSS_SELECTOR, "#functions tbody tr")
        assert sorted(str(r.get_attribute("data-fn")) for r in rows) == ["nightly", "orders"]
        triggers = driver.find_element(By.ID, "triggers").text
        assert "nightly/cron[0]" in triggers
        assert "running" in triggers
        errors = str(driver.find_element(By.ID, "errors").get_attribute("textContent"))
        assert "w-sync is broken" in errors
        assert "RuntimeError" in errors
        # the script polls /status (with the cookie) and fills in live numbers
        wait.until(ec.text_to_be_present_in_element((By.ID, "updated"), "updated"))
        ok_cell = driver.find_element(By.CSS_SELECTOR, 'tr[data-fn="orders"] [data-k="ok"]')
        assert ok_cell.text == "3"
        queue = driver.find_element(By.CSS_SELECTOR, 'section[data-queue="local:orders-dlq"]')
        assert "RetriesExhausted" in queue.text
        assert queue.find_element(By.CSS_SELECTOR, '[data-k="depth"]').text == "1"
        # a second poll gives rates
        rate = 'tr[data-fn="orders"] [data-k="rate"]'
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, rate), "0.0"))
        driver.save_screenshot(str(tmp_path / "status-page.png"))

        # a cookie alone cannot change state: a form or text/plain post (what another
        # site's page can send without a preflight) is refused; the page's script sends
        # X-Eventrun-Request
        session = {"eventrun_session": cookie["value"]}
        with httpx.Client(base_url=d.url, cookies=session) as http:
            assert http.get("/status").status_code == 200
            r = http.post(
                "/dlq/local:orders-dlq/redrive",
                content=b"{}",
                headers={"Content-Type": "text/plain"},
            )
            assert r.status_code == 403

        # the Redrive button of the entry: the event runs again, once
        button = queue.find_element(By.CSS_SELECTOR, "button.redrive[data-id]")
        button.click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "redrive-result"), "Redrove 1 entry"))
        _wait(lambda: ledger(tmp_path)["orders w1"] == 1, "the redriven event was handled")
        wait.until(ec.presence_of_element_located((By.ID, "dlq-empty")))  # after the reload

        # Sign out (a form POST, same-origin): back to the sign-in form, and the old
        # cookie value is revoked on the server, not just dropped by the browser
        driver.find_element(By.CSS_SELECTOR, "#logout button").click()
        wait.until(ec.presence_of_element_located((By.ID, "token")))
        assert driver.get_cookies() == []
        with httpx.Client(base_url=d.url, cookies=session) as http:
            assert http.get("/status").status_code == 401
        # the sign-in form (a same-origin form POST) opens a new session
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "functions")))
        (renewed,) = driver.get_cookies()
        assert renewed["value"] != cookie["value"]
    assert ledger(tmp_path) == Counter(
        {"orders ok0": 1, "orders ok1": 1, "orders ok2": 1, "orders w1": 1}
    )
    shot = tmp_path / "status-page.png"
    assert shot.stat().st_size > 10_000
    print(json.dumps({"screenshot": str(shot)}))


# -- sessions, sign-in and the page's template (security issue #31), no browser ---------

SESSION_YAML = """
store: {url: "sqlite:///state.db"}
functions:
  echo:
    handler: fns:echo
    runtime: inline
    triggers:
      - http: {path: /hook, methods: [GET], auth: none}
  boom:
    handler: fns:boom
    runtime: inline
"""

SESSION_FNS = """
async def echo(event, context):
    return event

async def boom(event, context):
    raise RuntimeError("{{SCRIPT}} {{BODY}} {{NONCE}} </pre><script>alert(1)</script>")
"""


@asynccontextmanager
async def _session_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("EVENTRUN_TOKENS", TOKEN)
    config = write_app(tmp_path, SESSION_YAML, {"fns.py": SESSION_FNS})
    async with running_app(config) as runtime:
        url = f"http://127.0.0.1:{runtime.bound_port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http


async def _sign_in(http: httpx.AsyncClient) -> str:
    r = await http.post("/login", data={"token": TOKEN}, headers={"Origin": str(http.base_url)})
    assert r.status_code == 303, r.text
    value = r.cookies["eventrun_session"]
    http.cookies.clear()
    return value


async def test_session_cookie_is_for_the_admin_pages_only_and_logout_revokes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _session_app(tmp_path, monkeypatch) as http:
        value = await _sign_in(http)
        assert TOKEN not in value
        token_id, expiry, _ = value.split(".")
        assert float(expiry) <= time.time() + SESSION_TTL_S + 60  # it expires
        session = {"Cookie": f"eventrun_session={value}"}
        assert (await http.get("/status", headers=session)).status_code == 200
        # the Invoke API wants the bearer token; a function URL never sees the cookie
        invoke = "/2015-03-31/functions/echo/invocations"
        assert (await http.post(invoke, json={}, headers=session)).status_code == 401
        r = await http.get("/hook", headers={"Cookie": f"app=1; eventrun_session={value}"})
        assert r.json()["cookies"] == ["app=1"]
        assert value not in r.text
        # a forged value, or one whose expiry was edited, is refused
        forged = f"{token_id}.{int(expiry) + 3600}.{value.rsplit('.', 1)[1]}"
        r = await http.get("/status", headers={"Cookie": f"eventrun_session={forged}"})
        assert r.status_code == 401
        # logout is a POST (GET: 405) and revokes the value server-side
        assert (await http.get("/logout", headers=session)).status_code == 405
        marked = {**session, "X-Eventrun-Request": "1"}
        assert (await http.post("/logout", headers=marked)).status_code == 303
        assert (await http.get("/status", headers=session)).status_code == 401


async def test_a_restart_revokes_every_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _session_app(tmp_path, monkeypatch) as http:
        value = await _sign_in(http)
    async with _session_app(tmp_path, monkeypatch) as http:
        r = await http.get("/status", headers={"Cookie": f"eventrun_session={value}"})
        assert r.status_code == 401


async def test_sign_in_from_another_site_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _session_app(tmp_path, monkeypatch) as http:
        r = await http.post(
            "/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"}
        )
        assert r.status_code == 403
        assert "eventrun_session" not in r.cookies
        # a form post without Origin is not a browser's: it needs the request header
        assert (await http.post("/login", data={"token": TOKEN})).status_code == 403
        r = await http.post("/login", data={"token": TOKEN}, headers={"X-Eventrun-Request": "1"})
        assert r.status_code == 303


async def test_failed_sign_ins_are_rate_limited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _session_app(tmp_path, monkeypatch) as http:
        marked = {"X-Eventrun-Request": "1"}
        statuses = [
            (await http.post("/login", data={"token": f"wrong-{n}"}, headers=marked)).status_code
            for n in range(LoginLimiter().burst)
        ]
        assert statuses == [401] * LoginLimiter().burst
        r = await http.post("/login", data={"token": "wrong-again"}, headers=marked)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        # throttled means not even checked: the right token waits too
        r = await http.post("/login", data={"token": TOKEN}, headers=marked)
        assert r.status_code == 429
        assert (await http.get(f"/?token={TOKEN}")).status_code == 429


async def test_template_slots_in_data_stay_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page is filled in one pass: an error message holding ``{{SCRIPT}}`` does not
    become a second copy of the page's script."""
    async with _session_app(tmp_path, monkeypatch) as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = await http.post("/2015-03-31/functions/boom/invocations", json={}, headers=auth)
        assert r.headers["x-amz-function-error"] == "Unhandled"
        page = (await http.get("/", headers=auth)).text
    assert page.count("<script") == 1
    assert page.count("setInterval(poll") == 1
    assert "{{SCRIPT}} {{BODY}} {{NONCE}}" in page
    assert "<script>alert(1)" not in page


async def test_without_tokens_sign_in_is_a_redirect_and_the_page_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loopback with no tokens configured: a ``?token=`` or a sign-in form is answered by a
    plain redirect to the page (no session is made, the token leaves the URL), the page
    itself is served, and an app without triggers says so."""
    monkeypatch.delenv("EVENTRUN_TOKENS", raising=False)
    yaml = 'store: {url: "sqlite:///state.db"}\nfunctions:\n  echo:\n'
    yaml += "    handler: fns:echo\n    runtime: inline\n"
    config = write_app(tmp_path, yaml, {"fns.py": SESSION_FNS})
    async with running_app(config) as runtime:
        url = f"http://127.0.0.1:{runtime.bound_port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            r = await http.get("/", params={"token": "anything-at-all-1234"})
            assert (r.status_code, r.headers["location"]) == (303, "/")
            assert "eventrun_session" not in r.cookies
            marked = {"X-Eventrun-Request": "1"}
            r = await http.post("/login", data={"token": "whatever"}, headers=marked)
            assert (r.status_code, r.headers["location"]) == (303, "/")
            assert "eventrun_session" not in r.cookies
            page = await http.get("/")
            assert page.status_code == 200
            assert "No triggers: invoke functions through the API." in page.text
            assert '<table id="triggers">' not in page.text


async def test_sign_out_from_another_site_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _session_app(tmp_path, monkeypatch) as http:
        value = await _sign_in(http)
        session = {"Cookie": f"eventrun_session={value}"}
        r = await http.post("/logout", headers={**session, "Origin": "http://evil.example"})
        assert r.status_code == 403
        assert (await http.post("/logout", headers=session)).status_code == 403  # no marker
        assert (await http.get("/status", headers=session)).status_code == 200  # not revoked


# -- the 15-minute charts (issue 29) ------------------------------------------------------

CHARTS_CONFIG = """
store: {url: "sqlite:///state.db"}
functions:
  orders:
    handler: charts:ok
    triggers:
      - http: {path: /orders, methods: [GET], auth: none}
  payments:
    handler: charts:fails
    maximum_retry_attempts: 0
    triggers:
      - http: {path: /payments, methods: [GET], auth: none}
"""

CHARTS_FNS = """
def ok(event, context):
    return {"statusCode": 200, "body": "ok"}

def fails(event, context):
    raise RuntimeError("card declined")
"""


def test_status_page_charts_the_last_minutes(tmp_path: Path, browser: WebDriver) -> None:
    """Invocations and errors per function and DLQ depth, drawn as inline SVG from the
    daemon's in-memory samples (one every 5 s), redrawn live by the page's script."""
    from selenium.webdriver.common.by import By

    (tmp_path / "eventrun.yaml").write_text(CHARTS_CONFIG)
    (tmp_path / "charts.py").write_text(CHARTS_FNS)
    with daemon(tmp_path / "eventrun.yaml") as d, httpx.Client(base_url=d.url) as http:
        samples = lambda: len(http.get("/status/history").json()["at"])  # noqa: E731
        first = samples()
        n = 0
        while samples() < first + 3:  # traffic across three sampling intervals
            http.get("/orders")
            if n % 3 == 0:
                http.get("/payments")
                http.post(
                    "/2015-03-31/functions/payments/invocations",
                    json={"n": n},
                    headers={"X-Amz-Invocation-Type": "Event"},
                )
            n += 1
            time.sleep(0.05)
        history = http.get("/status/history").json()
        assert history["interval_s"] == 5
        assert sum(history["functions"]["orders"]["invocations"]) >= n - 30
        assert sum(history["functions"]["orders"]["errors"]) == 0
        assert sum(history["functions"]["payments"]["errors"]) > 0

        browser.get(d.url + "/")
        charts = browser.find_element(By.ID, "charts")
        keys = [f.get_attribute("data-series") for f in charts.find_elements(By.TAG_NAME, "figure")]
        assert keys == [
            "functions/orders/invocations",
            "functions/orders/errors",
            "functions/payments/invocations",
            "functions/payments/errors",
            "dlq/local:orders-dlq",
            "dlq/local:payments-dlq",
        ]

        def plotted(key: str) -> list[float]:
            """The y values of a chart's line, 0 at the bottom, as drawn in the browser."""
            svg = charts.find_element(By.CSS_SELECTOR, f'figure[data-series="{key}"] svg')
            line = svg.find_element(By.TAG_NAME, "polyline")
            height = float(svg.get_attribute("height") or 0)
            pts = str(line.get_attribute("points")).split()
            return [round(height - 2 - float(p.split(",")[1]), 1) for p in pts]

        assert len(plotted("functions/orders/invocations")) >= 3
        assert max(plotted("functions/orders/invocations")) == 36.0  # scaled to the top
        assert set(plotted("functions/orders/errors")) == {0.0}
        assert max(plotted("functions/payments/errors")) == 36.0
        assert plotted("dlq/local:payments-dlq")[-1] > 0  # the DLQ grew
        # the script redraws from /status/history: one more sample, one more point
        before = len(plotted("functions/orders/invocations"))
        _wait(
            lambda: len(plotted("functions/orders/invocations")) > before,
            "the charts were redrawn with a new sample",
            timeout_s=15,
        )
        shot = tmp_path / "status-page.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        dlq_svg = 'figure[data-series="dlq/local:payments-dlq"] svg'
        label = charts.find_element(By.CSS_SELECTOR, dlq_svg).get_attribute("aria-label")
        assert "local:payments-dlq: depth: last" in str(label)
    print(json.dumps({"screenshot": str(shot)}))  # docs/status-page.png is this picture


def test_the_charts_section_has_a_card_per_series_lag_included() -> None:
    import re

    from eventrun.observe import History
    from eventrun.server._web import _charts

    assert _charts(History().series()) == '<p class="muted">No samples yet.</p>'
    history = History()
    for n in range(3):
        history.sample(
            {
                "functions": {"f": {"invocations": {"ok": 4 * n, "error": n}}},
                "sources": {"f/kafka[0]": {"lag": {"total": 10 - n}}},
                "dlq": {"local:f-dlq": n},
            },
            at=float(n),
        )
    html = _charts(history.series())
    assert re.findall(r'data-series="([^"]+)"', html) == [
        "functions/f/invocations",
        "functions/f/errors",
        "lag/f/kafka[0]",
        "dlq/local:f-dlq",
    ]
    assert "f/kafka[0]: lag: last 8, max 10" in html
    assert 'class="spark lag"' in html
