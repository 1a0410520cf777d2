"""The web console's search view in a real headless Chromium, against a real server with a
known corpus (confluent-kafka: JSON values with service/level/msg, binary values, headers).

Whatever the page shows is compared with what the HTTP API answers for the same request:
the exact total and the hit rows (topic, partition, offset, in order); a typed query, a bad
query's error text, the histogram zoom, load more, live tail, the terms panel and the back
button each change the page the way the API says they should. No console error on the way,
and the first load weighs under 300 kB. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import confluent_kafka
import pytest

from . import browser
from .browser import (
    Console,
    api,
    corpus_record,
    corpus_topic,
    is_http_error,
    number,
)
from .conftest import Server

# The shared fixtures (pytest finds fixtures by module attribute).
browser_context, srv, c = browser.browser_context, browser.srv, browser.c

pytestmark = pytest.mark.timeout(120)

N = 300
PARTITIONS = 3
SETTLE_S = 5.0


@pytest.fixture(scope="module")
def topic(srv: Server) -> str:
    return corpus_topic(srv, "logs", N, PARTITIONS)


def rows(c: Console) -> list[tuple[str, int, int]]:
    got = c.page.eval_on_selector_all(
        ".hit",
        "els => els.map(e => [e.dataset.topic, +e.dataset.partition, +e.dataset.offset])",
    )
    return [tuple(r) for r in got]


def api_rows(answer: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(h["topic"], h["partition"], h["offset"]) for h in answer["hits"]]


def shown_total(c: Console) -> int | None:
    text = (c.page.text_content("#total") or "").strip()
    try:
        return number(text)
    except AssertionError:
        return None


def url(**params: str) -> str:
    return "/?" + urlencode(params)


def page_params(address: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(address).query, keep_blank_values=True)


def last_search(c: Console) -> dict[str, list[str]]:
    urls = c.until(c.search_requests, "the page searches")
    return page_params(urls[-1])


def shows(c: Console, answer: dict[str, Any]) -> None:
    """The page settles on exactly the API's total and rows."""
    want = (answer["total"], api_rows(answer))
    c.until(lambda: (shown_total(c), rows(c)) == want, f"page shows total/rows {want[0]}")


def same_as_api(c: Console, srv: Server) -> dict[str, Any]:
    """Replays the page's last /search request against the API; the page shows that answer."""
    answer = api(srv.http, "/search", last_search(c))
    shows(c, answer)
    return answer


def test_a_url_opens_that_search_with_the_apis_total_and_rows(
    c: Console, srv: Server, topic: str
) -> None:
    q = "value.service:payments"
    with c.page.expect_response(lambda r: "/search?" in r.url):
        c.open(url(topic=topic, q=q))
    sent = last_search(c)
    assert sent["topic"] == [topic] and sent["q"] == [q], sent
    answer = same_as_api(c, srv)
    payments = [i for i in range(N) if i % 3 == 0 and i % 10 != 9]  # JSON, service payments
    assert answer["total"] == len(payments) and len(answer["hits"]) > 0
    first = c.page.locator(".hit").first
    doc = answer["hits"][0]["value_json"]
    assert doc["msg"] in first.inner_text()
    hit = answer["hits"][0]
    kcat = f"kcat -C -b {srv.bootstrap} -t {topic} -p {hit['partition']} -o {hit['offset']} -c 1"
    assert kcat in first.inner_text()
    assert c.page.input_value("#q") == q
    c.shot("search")
    weight = c.transferred()
    print(f"first load: {weight} bytes in {len(c.responses)} responses")
    assert weight < 300_000, f"first load transferred {weight} bytes"
    c.assert_clean()


def test_binary_values_show_as_base64_with_a_marker(c: Console, srv: Server, topic: str) -> None:
    # The newest record of the corpus with a binary value (every 10th): the first hit of a
    # search for its key.
    key, value, _, _ = corpus_record(N - 1, 0, N)
    c.open(url(topic=topic, q=f'key:"{key.decode()}"'))
    answer = same_as_api(c, srv)
    assert answer["hits"][0]["encoding"] == "base64"
    text = c.page.locator(".hit").first.inner_text()
    assert base64.b64encode(value).decode()[:16] in text, text
    assert "base64" in text.lower(), text
    c.assert_clean()


def test_typing_a_query_and_enter_runs_it(c: Console, srv: Server, topic: str) -> None:
    c.open(url(topic=topic))
    same_as_api(c, srv)
    q = 'value.level:error AND "timeout"'
    c.page.fill("#q", q)
    c.page.press("#q", "Enter")
    c.until(lambda: page_params(c.page.url).get("q") == [q], "the URL carries the new query")
    c.until(lambda: last_search(c).get("q") == [q], "the page searched the new query")
    answer = same_as_api(c, srv)
    assert 0 < answer["total"] < N
    c.assert_clean()


def test_a_bad_query_shows_the_apis_error_text(c: Console, srv: Server, topic: str) -> None:
    bad = "value.level:(error"
    r = c.page.request.get(srv.http + "/search", params={"topic": topic, "q": bad})
    assert r.status == 400, r.text()
    detail = r.json()["detail"]
    c.open(url(topic=topic, q=bad))
    c.until(lambda: detail in (c.page.text_content("#error") or ""), f"#error shows {detail!r}")
    assert c.page.is_visible("#error")
    # No empty chart under the error box: it would read as a range without matches.
    c.until(lambda: not c.page.is_visible("#histogram"), "the histogram is hidden")
    assert not c.page.is_visible("#terms")
    c.shot("search-error")
    c.assert_clean(is_http_error(400))


def test_dragging_over_the_histogram_narrows_the_range(c: Console, srv: Server, topic: str) -> None:
    c.open(url(topic=topic, q="timeout"))
    same_as_api(c, srv)
    box = c.until(lambda: c.page.locator("#histogram").bounding_box(), "the histogram is drawn")
    drawn = api(srv.http, "/search/histogram", {"topic": topic, "q": "timeout"})
    peak = max(b["count"] for b in drawn["buckets"])
    scale = c.until(lambda: c.page.text_content("#histogram .scale"), "the scale note is drawn")
    assert c.page.get_attribute("#histogram", "data-peak") == str(peak)
    assert scale.startswith(f"peak {peak:,} per "), scale
    before = page_params(c.page.url)
    y = box["y"] + box["height"] / 2
    c.page.mouse.move(box["x"] + box["width"] * 0.3, y)
    c.page.mouse.down()
    c.page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    c.page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=5)
    c.page.mouse.up()

    def zoomed() -> dict[str, list[str]] | None:
        now = page_params(c.page.url)
        moved = now.get("start") != before.get("start") and now.get("end") != before.get("end")
        return now if moved and "start" in now and "end" in now else None

    now = c.until(zoomed, "the URL's start and end change")
    assert now["q"] == ["timeout"] and now["topic"] == [topic]
    c.until(lambda: last_search(c).get("start") == now["start"], "the page searched the range")
    full = api(srv.http, "/search", {"topic": topic, "q": "timeout", "limit": 1})["total"]
    answer = same_as_api(c, srv)
    assert 0 < answer["total"] < full, (answer["total"], full)
    c.assert_clean()


def test_load_more_appends_the_next_page_without_duplicates(
    c: Console, srv: Server, topic: str
) -> None:
    c.open(url(topic=topic))
    first = same_as_api(c, srv)
    assert first["next_cursor"], "the corpus must be larger than a page"
    page2 = api(srv.http, "/search", {**last_search(c), "cursor": first["next_cursor"]})
    c.page.click("#load-more")
    want = api_rows(first) + api_rows(page2)
    c.until(lambda: rows(c) == want, "the next page appended")
    assert len(set(rows(c))) == len(rows(c))
    c.assert_clean()


def test_live_tail_shows_records_produced_after_load_within_2s_newest_first(
    c: Console, srv: Server, topic: str
) -> None:
    c.open(url(topic=topic))
    same_as_api(c, srv)
    c.page.click("#tail")
    c.page.wait_for_timeout(300)
    # Two records in one burst (one poll most likely returns both), the second one newer.
    producer = confluent_kafka.Producer({"bootstrap.servers": srv.bootstrap, "linger.ms": 0})
    got: list[Any] = []
    now_ms = int(time.time() * 1000)
    for n in range(2):
        producer.produce(
            topic,
            b'{"service":"tail","msg":"fresh record %d"}' % n,
            b"tail-%d" % n,
            partition=1,
            timestamp=now_ms + n * 10,
            on_delivery=lambda err, msg: got.append((err, msg)),
        )
    assert producer.flush(10) == 0
    acked = time.monotonic()
    assert [err for err, _ in got] == [None, None]
    want = [(topic, 1, msg.offset()) for _, msg in reversed(got)]
    c.until(lambda: rows(c)[:2] == want, "the tailed records on top, newest first", 2.0)
    took = time.monotonic() - acked
    print(f"live tail: shown {took:.2f} s after the produce was acknowledged")
    c.page.click("#tail")
    c.assert_clean()


def test_a_term_clicked_in_the_terms_panel_is_added_to_the_query(
    c: Console, srv: Server, topic: str
) -> None:
    c.open(url(topic=topic, q="timeout"))
    same_as_api(c, srv)
    field = "value.service"
    c.page.fill("#terms-field", field)
    c.page.press("#terms-field", "Enter")
    terms = api(srv.http, "/search/terms", {"topic": topic, "q": "timeout", "field": field})
    values = [str(t["value"]) for t in terms["terms"]]
    c.until(lambda: c.page.locator(".term").count() == len(values), "the terms are listed")
    listed = c.page.locator(".term").all_inner_texts()
    for t, text in zip(terms["terms"], listed, strict=True):
        assert str(t["value"]) in text and str(t["count"]) in text, (t, text)
    c.shot("search-terms")
    c.page.locator(".term").first.click()
    clause = f'{field}:"{values[0]}"'
    c.until(lambda: clause in c.page.input_value("#q"), f"#q gets {clause}")
    q = page_params(c.page.url)["q"][0]
    assert clause in q and "timeout" in q, q
    c.until(lambda: last_search(c).get("q") == [q], "the page searched the new query")
    answer = same_as_api(c, srv)
    assert answer["total"] == terms["terms"][0]["count"]
    c.assert_clean()


def test_the_suggested_terms_field_is_one_whose_values_repeat(c: Console, srv: Server) -> None:
    # The panel loads the suggested field's terms unasked: a per-record field there (an id,
    # a time) would count every record's value, seconds on a large topic.
    name = browser.unique_topic("ids")
    browser.create_topic(srv.bootstrap, name, 1)
    producer = confluent_kafka.Producer({"bootstrap.servers": srv.bootstrap})
    for i in range(60):
        doc = {
            "id": f"req-{i}",
            "ts": 1_700_000_000_000 + i,
            "region": ["eu", "us"][i % 2],
            "kind": ["a", "b", "c"][i % 3],
        }
        producer.produce(name, json.dumps(doc).encode())
    assert producer.flush(20) == 0
    browser.wait_indexed(srv.http, name, 60)
    c.open(url(topic=name))
    same_as_api(c, srv)
    c.until(lambda: c.search_requests("/search/terms"), "the terms panel loads")
    asked = page_params(c.search_requests("/search/terms")[-1])
    assert asked["field"] == ["value.region"], asked
    assert c.page.input_value("#terms-field") == "value.region"
    counts = api(srv.http, "/search/terms", {"topic": name, "field": "value.region"})["terms"]
    c.until(lambda: c.page.locator(".term").count() == len(counts) == 2, "both regions listed")
    # A field the query pins to one value is passed over for one that splits the matches.
    c.open(url(topic=name, q="value.region:eu"))
    c.until(lambda: last_search(c).get("q") == ["value.region:eu"], "the page searched")
    assert same_as_api(c, srv)["total"] == 30
    c.until(lambda: c.page.input_value("#terms-field") == "value.kind", "value.kind suggested")
    c.assert_clean()


def test_back_returns_to_the_previous_search(c: Console, srv: Server, topic: str) -> None:
    c.open(url(topic=topic, q="value.service:orders"))
    first = same_as_api(c, srv)
    c.page.fill("#q", "value.service:search")
    c.page.press("#q", "Enter")
    c.until(lambda: last_search(c).get("q") == ["value.service:search"], "second search run")
    same_as_api(c, srv)
    c.page.go_back()
    c.until(lambda: c.page.input_value("#q") == "value.service:orders", "#q restored")
    shows(c, first)
    c.assert_clean()


def test_around_opens_the_records_around_a_hit_in_its_partition(
    c: Console, srv: Server, topic: str
) -> None:
    c.open(url(topic=topic, q="value.service:orders"))
    answer = same_as_api(c, srv)
    hit = answer["hits"][3]
    row = c.page.locator(
        f'.hit[data-partition="{hit["partition"]}"][data-offset="{hit["offset"]}"]'
    )
    row.locator("a.around").click()
    c.until(lambda: page_params(c.page.url).get("sort") == ["offset"], "the around search opens")
    params = page_params(c.page.url)
    assert params["partition"] == [str(hit["partition"])], params
    c.until(lambda: last_search(c).get("sort") == ["offset"], "the page searched around the hit")
    around = same_as_api(c, srv)
    offsets = [o for t, p, o in api_rows(around)]
    assert hit["offset"] in offsets and offsets == sorted(offsets), offsets
    assert {p for _, p, _ in api_rows(around)} == {hit["partition"]}
    assert len(offsets) > 1
    c.assert_clean()


def test_several_topics_are_searched_together(c: Console, srv: Server, topic: str) -> None:
    other = corpus_topic(srv, "more", 40, 1)
    c.open(url(topic=f"{topic},{other}", q="timeout"))
    answer = same_as_api(c, srv)
    assert {t for t, _, _ in api_rows(answer)} == {topic, other}
    chosen = c.page.eval_on_selector_all("#topics option:checked", "os => os.map(o => o.value)")
    assert sorted(chosen) == sorted([topic, other])
    c.assert_clean()
