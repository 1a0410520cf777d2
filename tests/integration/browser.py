"""A real headless Chromium (Debian's package) driven by Playwright, for the console tests.

Playwright's own browser downloads are never used: the Chromium on PATH is launched through
`executable_path`, with a fresh profile per module. Without it the browser tests skip, and
`tests/conftest.py`'s terminal summary prints a loud warning so a run never passes silently.

`Console` is a page that records what a user would never see but a test must: console
errors, uncaught exceptions, failed requests (4xx/5xx and network failures) and the bytes
every response transferred.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from .conftest import REPO, Server, running_server, unique_topic
from .layered import wait_until

SKIP_REASON = "BROWSER TESTS SKIPPED: chromium not found on PATH"
ARTIFACTS = REPO / "tests" / "artifacts"
VIEWPORT = {"width": 1280, "height": 800}
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Aborting a superseded fetch (a new search, a tail poll cut short) is the page working.
_ABORTED = "net::ERR_ABORTED"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def number(text: str) -> int:
    """An integer as the page prints it: thousands separators of any locale allowed."""
    digits = re.sub(r"[\s,.'\u00a0\u202f_]", "", text)
    assert digits.isdigit(), f"not a number: {text!r}"
    return int(digits)


@dataclass
class Console:
    """A page of the console on one server, with what went wrong on it."""

    page: Any
    base: str
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    responses: list[Any] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.page.goto(self.base + path, wait_until="load")

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def transferred(self) -> int:
        """Bytes of every response so far, headers and body as sent."""
        total = 0
        for r in self.responses:
            sizes = r.request.sizes()
            total += sizes["responseHeadersSize"] + sizes["responseBodySize"]
        return total

    def assert_clean(self, allow: Callable[[str], bool] = lambda _: False) -> None:
        """No console error, uncaught exception or failed request (unless `allow`ed)."""
        bad = [e for e in self.errors + self.failed if not allow(e)]
        assert not bad, "the page reported errors:\n" + "\n".join(bad)

    def until(self, cond: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
        """wait_until, letting Playwright run before each try: its events (responses,
        console messages) are delivered only inside its calls, never during a sleep."""

        def pumped() -> Any:
            self.page.wait_for_timeout(10)
            return cond()

        return wait_until(pumped, timeout, what)

    def search_requests(self, path: str = "/search") -> list[str]:
        """URLs of the page's requests to `path` (exactly, not /search/terms), oldest first."""
        return [r.url for r in self.responses if r.url.split("?")[0] == self.base + path]


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    exe = chromium()
    if exe is None:
        pytest.skip(SKIP_REASON)
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=exe,
            headless=True,
            args=ARGS,
            viewport=VIEWPORT,
        )
        ctx.set_default_timeout(10_000)
        try:
            yield ctx
        finally:
            ctx.close()


def open_console(ctx: Any, base: str) -> Console:
    page = ctx.new_page()
    c = Console(page, base)

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            c.errors.append(f"console: {msg.text} ({msg.location.get('url', '')})")

    def on_response(r: Any) -> None:
        c.responses.append(r)
        if r.status >= 400:
            c.failed.append(f"HTTP {r.status} {r.request.method} {r.url}")

    def on_failed(req: Any) -> None:
        if req.failure != _ABORTED:
            c.failed.append(f"request failed: {req.url} ({req.failure})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: c.errors.append(f"uncaught: {exc}"))
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    return c


def is_http_error(status: int) -> Callable[[str], bool]:
    """An allow filter for an expected error answer: Chromium logs every 4xx as a console
    error ("Failed to load resource"), and the response is recorded as failed."""
    return lambda e: f"HTTP {status} " in e or f"status of {status}" in e


# The known corpus ----------------------------------------------------------------------------

SERVICES = ("payments", "orders", "search")
LEVELS = ("info", "warn", "error")
SPREAD_MS = 50 * 60 * 1000


def corpus_record(i: int, now_ms: int, n: int) -> tuple[bytes, bytes, list[tuple[str, bytes]], int]:
    """Record i of n: (key, value, headers, timestamp_ms); every 10th value is binary, the
    others JSON with service/level/msg; timestamps spread over the last 50 minutes."""
    ts = now_ms - SPREAD_MS + i * SPREAD_MS // n
    headers = [("trace", f"tr-{i}".encode()), ("raw", bytes([0, 255, i % 256]))]
    if i % 10 == 9:
        return f"k-{i}".encode(), bytes([0xFF, 0x00, i % 256]) * 8, headers, ts
    doc = {
        "service": SERVICES[i % 3],
        "level": LEVELS[(i // 3) % 3],
        "msg": f"request {i} " + ("upstream timeout" if i % 4 == 0 else "done"),
        "n": i,
    }
    return f"k-{i}".encode(), json.dumps(doc).encode(), headers, ts


def produce_corpus(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    now_ms = int(time.time() * 1000)
    for i in range(n):
        key, value, headers, ts = corpus_record(i, now_ms, n)
        producer.produce(topic, value, key, partition=i % partitions, headers=headers, timestamp=ts)
    assert producer.flush(20) == 0


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1)
    admin.create_topics([new], request_timeout=20)[topic].result()


def api(base: str, path: str, params: Any = None, **kw: Any) -> Any:
    r = httpx.get(base + path, params=params, timeout=20, **kw)
    assert r.status_code == 200, (path, params, r.status_code, r.text)
    return r.json()


def wait_indexed(base: str, topic: str, n: int, **kw: Any) -> None:
    deadline = time.monotonic() + 30
    while api(base, "/search", {"topic": topic, "limit": 1}, **kw)["total"] < n:
        assert time.monotonic() < deadline, f"{topic}: {n} records not indexed in 30 s"
        time.sleep(0.1)


def corpus_topic(srv: Server, prefix: str, n: int, partitions: int) -> str:
    name = unique_topic(prefix)
    create_topic(srv.bootstrap, name, partitions)
    produce_corpus(srv.bootstrap, name, n, partitions)
    wait_indexed(srv.http, name, n)
    return name


# Fixtures the console test modules import -----------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server committing its search index every 200 ms, so new records show at once."""
    with running_server(tmp_path_factory.mktemp("console"), ("--index-commit-ms", "200")) as s:
        yield s


@pytest.fixture
def c(browser_context: Any, srv: Server) -> Iterator[Console]:
    console = open_console(browser_context, srv.http)
    yield console
    console.page.close()
