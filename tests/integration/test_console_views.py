"""The web console's topics, groups and status views, and the console under HTTP auth, in a
real headless Chromium against a real server.

The figures on the page are the API's: each topic row's partitions, records, high watermark
and log start (GET /topics), a partition's records browsed by offset (GET /search); a real
confluent-kafka consumer group's state, members and lag, and per partition its committed
offset, high watermark and lag (GET /groups, /groups/{g}). With HTTP auth required the page
asks to sign in, then shows who is signed in, and a topic the user may not read is a clear
message. No console errors; screenshots of each view go to tests/artifacts/."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import confluent_kafka
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AclOperation, ResourceType

from . import browser
from .aclcluster import PREFIXED, Cluster, secure_cluster
from .browser import (
    Console,
    api,
    corpus_topic,
    is_http_error,
    number,
    open_console,
    wait_indexed,
)
from .conftest import Server, unique_topic

# The shared fixtures (pytest finds fixtures by module attribute).
browser_context, srv, c = browser.browser_context, browser.srv, browser.c

pytestmark = pytest.mark.timeout(120)

N = 90
PARTITIONS = 2
COMMITTED = {0: 10, 1: 4}


@pytest.fixture(scope="module")
def topic(srv: Server) -> str:
    return corpus_topic(srv, "views", N, PARTITIONS)


def figure(row: Any, cls: str) -> int:
    """A number shown in a row's cell of class `cls` (its data-value when it has one)."""
    cell = row.locator(f".{cls}").first
    value = cell.get_attribute("data-value")
    return int(value) if value is not None else number(cell.inner_text())


def test_topics_view_shows_the_apis_figures(c: Console, srv: Server, topic: str) -> None:
    c.open("/?view=topics")
    row = c.page.locator(f'.topic[data-topic="{topic}"]')
    row.wait_for()
    t = api(srv.http, f"/topics/{topic}")
    parts = t["partitions"]
    assert figure(row, "partitions") == PARTITIONS == len(parts)
    records = sum(p["log_end_offset"] - p["log_start_offset"] for p in parts)
    assert figure(row, "records") == records == N
    assert figure(row, "high-watermark") == sum(p["log_end_offset"] for p in parts)
    assert figure(row, "log-start") == sum(p["log_start_offset"] for p in parts)
    c.shot("topics")
    row.locator("td").nth(1).click()
    detail = c.page.locator(f'#topic-detail[data-topic="{topic}"]')
    detail.wait_for()
    for p in parts:
        prow = detail.locator(f'.partition[data-partition="{p["partition"]}"]')
        prow.wait_for()
        assert figure(prow, "high-watermark") == p["log_end_offset"]
        assert figure(prow, "log-start") == p["log_start_offset"]
    c.shot("topic-detail")
    c.assert_clean()


def test_a_partition_is_browsed_by_offset(c: Console, srv: Server, topic: str) -> None:
    c.open("/?" + urlencode({"view": "topics", "topic": topic}))
    c.page.locator("#browse-partition").wait_for()
    c.page.locator("#browse-partition").select_option("1")
    c.page.fill("#browse-offset", "20")
    c.page.press("#browse-offset", "Enter")

    def shown() -> list[int]:
        got = c.page.eval_on_selector_all(".record", "els => els.map(e => +e.dataset.offset)")
        return got if got and got[0] == 20 else []

    offsets = c.until(shown, "records from offset 20 of partition 1")
    assert offsets == list(range(20, 20 + len(offsets))), offsets
    # Partition 1 holds offsets 0..HW-1 without gaps (nothing compacted or deleted).
    (p1,) = [p for p in api(srv.http, f"/topics/{topic}")["partitions"] if p["partition"] == 1]
    assert offsets[-1] < p1["log_end_offset"]
    c.assert_clean()


@pytest.fixture
def group(srv: Server, topic: str) -> Iterator[str]:
    """A live confluent-kafka consumer group member that committed COMMITTED offsets."""
    gid = unique_topic("grp")
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": srv.bootstrap,
            "group.id": gid,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 20
    while len(consumer.assignment()) < PARTITIONS:
        assert time.monotonic() < deadline, "no assignment in 20 s"
        consumer.poll(0.2)
    offsets = [TopicPartition(topic, p, o) for p, o in COMMITTED.items()]
    consumer.commit(offsets=offsets, asynchronous=False)
    try:
        yield gid
    finally:
        consumer.close()


def test_groups_view_shows_state_members_and_lag(
    c: Console, srv: Server, topic: str, group: str
) -> None:
    listed = {g["group"]: g for g in api(srv.http, "/groups")["groups"]}
    g = listed[group]
    ends = {
        p["partition"]: p["log_end_offset"] for p in api(srv.http, f"/topics/{topic}")["partitions"]
    }
    assert g["lag"] == sum(ends[p] - o for p, o in COMMITTED.items())
    assert g["members"] == 1 and g["state"] == "Stable", g
    c.open("/?view=groups")
    row = c.page.locator(f'.group[data-group="{group}"]')
    row.wait_for()
    text = row.inner_text()
    assert g["state"] in text, text
    assert figure(row, "members") == 1
    assert figure(row, "lag") == g["lag"]
    c.shot("groups")
    c.open("/?" + urlencode({"view": "groups", "group": group}))
    detail = c.page.locator("#group-detail")
    detail.wait_for()
    d = api(srv.http, f"/groups/{group}")
    assert len(d["offsets"]) == PARTITIONS
    for o in d["offsets"]:
        lag = detail.locator(f'.lag[data-topic="{topic}"][data-partition="{o["partition"]}"]')
        lag.wait_for()
        assert figure(lag, "committed") == o["committed"] == COMMITTED[o["partition"]]
        assert figure(lag, "high-watermark") == o["high_watermark"] == ends[o["partition"]]
        assert figure(lag, "lag") == o["lag"]
    (member,) = d["members"]
    assert member["client_id"] in detail.inner_text()
    c.shot("group-detail")
    c.assert_clean()


def test_status_view_shows_indexer_and_segments(c: Console, srv: Server, topic: str) -> None:
    c.open("/?view=status")
    indexer = api(srv.http, "/indexer")
    mine = [p for p in indexer["partitions"] if p["topic"] == topic]
    assert len(mine) == PARTITIONS
    for p in mine:
        row = c.page.locator(
            f'#indexer tr.checkpoint[data-topic="{topic}"][data-partition="{p["partition"]}"]'
        )
        row.wait_for()
        assert figure(row, "indexed") == p["indexed_offset"]
        assert figure(row, "high-watermark") == p["high_watermark"]
    segments = api(srv.http, "/segments")["topics"][topic]
    box = c.page.locator(f'#segments .segment-topic[data-topic="{topic}"]')
    box.wait_for()
    assert int(box.get_attribute("data-records") or -1) == segments["records"] == N
    assert int(box.get_attribute("data-segments") or -1) == segments["segments"]
    c.shot("status")
    c.assert_clean()


@pytest.fixture(scope="module")
def cl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base: Path = tmp_path_factory.mktemp("console-auth")
    extra = ("--http-auth", "required", "--http-open-paths", "/readyz,/healthz")
    with secure_cluster(base, ("alice",), (*extra, "--index-commit-ms", "200")) as cluster:
        cluster.create_topic("orders-1")
        cluster.create_topic("secret-1")
        p = confluent_kafka.Producer({**cluster.conf("admin"), "linger.ms": 5})
        for t in ("orders-1", "secret-1"):
            for i in range(12):
                p.produce(t, json.dumps({"n": i, "service": "orders"}))
        assert p.flush(20) == 0
        cluster.create_acls(
            [
                cluster.binding(
                    "alice", ResourceType.TOPIC, "orders-", AclOperation.READ, pattern=PREFIXED
                )
            ]
        )
        wait_indexed(cluster.srv.http, "orders-1", 12, auth=("admin", cluster.passwords["admin"]))
        yield cluster


def test_with_auth_the_page_asks_to_sign_in_and_403_is_clear(
    browser_context: Any,
    cl: Cluster,
) -> None:
    c = open_console(browser_context, cl.srv.http)
    try:
        c.open("/?topic=orders-1")
        c.page.locator("#signin-form").wait_for()
        c.shot("signin")
        c.page.fill("#signin-user", "alice")
        c.page.fill("#signin-password", cl.passwords["alice"])
        c.page.press("#signin-password", "Enter")
        c.until(lambda: "alice" in (c.page.text_content("#whoami") or ""), "#whoami names alice")
        want = api(
            cl.srv.http, "/search", {"topic": "orders-1"}, auth=("alice", cl.passwords["alice"])
        )
        c.until(
            lambda: (c.page.text_content("#total") or "").strip() == str(want["total"]),
            f"total {want['total']} shown once signed in",
        )
        assert c.page.locator(".hit").count() == min(len(want["hits"]), 12)
        c.open("/?topic=secret-1")
        r = c.page.request.get(
            cl.srv.http + "/search",
            params={"topic": "secret-1"},
            headers={"Authorization": "Basic " + _basic("alice", cl.passwords["alice"])},
        )
        assert r.status == 403
        detail = r.json()["detail"]
        c.until(lambda: detail in (c.page.text_content("#error") or ""), f"#error: {detail}")
        assert "alice" in (c.page.text_content("#whoami") or "")
        c.shot("search-forbidden")
        c.assert_clean(lambda e: is_http_error(401)(e) or is_http_error(403)(e))
        assert cl.passwords["alice"] not in c.page.content()
    finally:
        c.page.close()


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()
