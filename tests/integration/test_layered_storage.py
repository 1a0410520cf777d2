"""The layered store end to end with a file object store: indexing, sealed segments, uploads,
WAL deletion, byte-exact fetch from every layer, restarts (clean and SIGKILL), poison
records and retention."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from tests.integration.clients import (
    Msg,
    consume_confluent,
    produce_confluent,
    watermarks,
    with_offsets,
)
from tests.integration.conftest import Server, unique_topic
from tests.integration.layered import (
    LAYERED_ARGS,
    all_indexed,
    assert_consumed_exactly,
    corpus,
    doc_offsets,
    fetch_bytes,
    metrics,
    produce_mixed,
    segments,
    wait_tiered,
    wait_until,
)
from tests.integration.rawkafka import RawKafka, Rec, build_batch
from tests.integration.test_topic_configs import create_topic

STORAGE_METRICS = {
    "chronik_indexer_records_total",
    "chronik_indexer_lag_records",
    "chronik_indexer_lag_seconds",
    "chronik_indexer_commit_seconds_bucket",
    "chronik_indexer_errors_total",
    "chronik_segments_published_total",
    "chronik_segments",
    "chronik_segment_bytes",
    "chronik_objectstore_requests_total",
    "chronik_objectstore_seconds_bucket",
    "chronik_fetch_bytes_total",
    "chronik_wal_bytes",
}


def _ends(produced: dict[int, list[Msg]]) -> dict[int, int]:
    return {p: max(m.offset for m in msgs) + 1 for p, msgs in produced.items()}


def _assert_documents_exact(srv: Server, topic: str, ends: dict[int, int]) -> None:
    """Every offset has exactly one search document: none missing, none duplicated."""
    for p, end in ends.items():
        offsets = doc_offsets(srv, topic, p)
        assert len(offsets) == end, f"partition {p}: {len(offsets)} documents for {end} offsets"
        assert offsets == list(range(end)), f"partition {p}: documents do not match offsets"


def test_200k_mixed_records_tier_out_and_fetch_byte_exact_from_every_layer(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server(*LAYERED_ARGS)
    topic = unique_topic("layers")
    create_topic(srv, topic, partitions=2)
    produced = produce_mixed(srv, topic, corpus(200_000), partitions=2)
    ends = _ends(produced)
    assert sum(ends.values()) == 200_000
    wait_tiered(srv, topic, ends)

    rows = segments(srv, topic)
    assert len(rows) >= 2 * 4, rows  # 20k records per segment at most, merges aside
    for p, end in ends.items():
        mine = [r for r in rows if r[0] == p]
        assert mine[0][1] == 0
        assert all(a[2] + 1 == b[1] for a, b in itertools.pairwise(mine))
        assert sum(r[3] for r in mine) <= end
    stored = {
        str(f.relative_to(srv.data_dir / "objects"))
        for f in (srv.data_dir / "objects").rglob("*.seg")
    }
    assert {r[5] for r in rows} <= stored

    # The WAL holds only the hot tail; reads come from the local segment cache.
    before = fetch_bytes(srv, "segment_cache")
    assert_consumed_exactly(srv, topic, produced)
    assert fetch_bytes(srv, "segment_cache") > before

    names = {name for name, _labels in metrics(srv)}
    assert names >= STORAGE_METRICS, STORAGE_METRICS - names

    srv.stop()
    _assert_documents_exact(srv, topic, ends)
    # An empty local cache after a restart: the same bytes come from the object store.
    shutil.rmtree(srv.data_dir / "segments")
    srv.start()
    assert_consumed_exactly(srv, topic, produced)
    assert fetch_bytes(srv, "object_store") > 0
    assert watermarks(srv.bootstrap, topic, 0) == (0, ends[0])


def test_sigkill_mid_indexing_and_upload_loses_and_duplicates_nothing(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server(*LAYERED_ARGS, "--segment-max-records", "7000")
    topic = unique_topic("kill")
    create_topic(srv, topic, partitions=2)
    msgs = corpus(120_000, seed=3)
    produced: dict[int, list[Msg]] = {0: [], 1: []}
    rnd = random.Random(7)
    for round_ in range(4):
        part = msgs[round_ * 30_000 : (round_ + 1) * 30_000]
        p = round_ % 2
        produced[p] += with_offsets(
            part, produce_confluent(srv.bootstrap, topic, part, "lz4", partition=p)
        )
        # Indexing, sealing and uploading are all under way now.
        time.sleep(rnd.uniform(0.05, 0.6))
        workers = _workers(srv.pid)
        assert workers
        srv.kill()
        # Its workers die with it: none may index beside the next service's.
        wait_until(lambda ws=workers: not any(map(_alive, ws)), 10, "orphaned workers to exit")
        srv.start()
    ends = _ends(produced)
    wait_tiered(srv, topic, ends)
    assert_consumed_exactly(srv, topic, produced)
    srv.stop()
    _assert_documents_exact(srv, topic, ends)


def test_poison_records_are_counted_and_do_not_stop_indexing(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server(*LAYERED_ARGS)
    topic = unique_topic("poison")
    create_topic(srv, topic)
    errors_before = metrics(srv).get(("chronik_indexer_errors_total", ()), 0.0)
    good = [Msg(b"k", b'{"status": 200, "level": "info"}', (), int(time.time() * 1000))]
    produce_confluent(srv.bootstrap, topic, good)
    # gzip flagged, but the records inside are not gzip: the CRC is still right.
    poison = build_batch([Rec(b"k", b"not gzip at all")] * 3, attributes=1)
    with RawKafka(srv.bootstrap) as raw:
        assert raw.produce(topic, 0, poison) == (0, 1)
    flips = [
        Msg(b"k", b'{"status": "two hundred"}', (), int(time.time() * 1000)),
        Msg(b"k", b'{"status": 201, "level": "warn"}', (), int(time.time() * 1000)),
        Msg(None, b"after the poison", (), int(time.time() * 1000)),
    ]
    produce_confluent(srv.bootstrap, topic, flips)
    wait_until(lambda: all_indexed(srv, topic, {0: 7}), 30, "indexing past the poison")
    errors = wait_until(
        lambda: metrics(srv).get(("chronik_indexer_errors_total", ()), 0.0) - errors_before >= 2,
        10,
        "the errors to be counted",
    )
    assert errors
    srv.stop()
    # The poison batch's three records are fetchable but not searchable; the rest are.
    assert doc_offsets(srv, topic, 0) == [0, 4, 5, 6]


def test_retention_removes_segments_from_store_and_registry(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server(*LAYERED_ARGS, "--segment-max-records", "2000")
    topic = unique_topic("retain")
    create_topic(srv, topic, **{"retention.ms": "4000"})
    old = corpus(10_000, seed=5, base_ts=int(time.time() * 1000))
    # Batches of at most 500 records, so 2,000-record segments seal several times.
    offsets = produce_confluent(srv.bootstrap, topic, old, "zstd", **{"batch.num.messages": 500})
    wait_tiered(srv, topic, {0: len(offsets)})
    old_rows = segments(srv, topic)
    old_keys = {r[5] for r in old_rows}
    assert len(old_keys) >= 2
    time.sleep(4.5)
    fresh = corpus(100, seed=6, base_ts=int(time.time() * 1000))
    produce_confluent(srv.bootstrap, topic, fresh)

    def gone() -> bool:
        live = {r[5] for r in segments(srv, topic, ("local", "uploaded", "deleting"))}
        files = {f.name for f in (srv.data_dir / "objects").rglob("*.seg")}
        return not (old_keys & live) and not {k.rsplit("/", 1)[1] for k in old_keys} & files

    wait_until(gone, 30, "expired segments to leave the registry and the store")
    low, high = watermarks(srv.bootstrap, topic, 0)
    assert low >= max(r[2] for r in old_rows) + 1 and high == 10_100


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _workers(pid: int) -> list[int]:
    """The server's indexer worker processes (not multiprocessing's resource tracker)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for kid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                out.append(int(kid))
    return out


def test_a_killed_indexer_worker_is_restarted_and_indexing_goes_on(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server(*LAYERED_ARGS, "--index-workers", "2")
    topic = unique_topic("respawn")
    create_topic(srv, topic, partitions=2)
    first = produce_mixed(srv, topic, corpus(20_000, seed=8), partitions=2)
    wait_until(lambda: all_indexed(srv, topic, _ends(first)), 30, "first indexing")
    workers = _workers(srv.pid)
    assert len(workers) == 2, workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    second = produce_mixed(srv, topic, corpus(20_000, seed=9), partitions=2)
    ends = {p: len(first[p]) + len(second[p]) for p in first}
    wait_tiered(srv, topic, ends)
    restarted = wait_until(
        lambda: metrics(srv).get(("chronik_indexer_worker_restarts_total", ()), 0.0) >= 2,
        10,
        "the restart count",
    )
    assert restarted
    assert set(_workers(srv.pid)).isdisjoint(workers) and len(_workers(srv.pid)) == 2
    srv.stop()
    _assert_documents_exact(srv, topic, ends)


def test_delete_records_and_delete_topic_remove_tiered_segments(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server(*LAYERED_ARGS, "--segment-max-records", "2000")
    topic = unique_topic("drop")
    create_topic(srv, topic)
    msgs = corpus(10_000, seed=4)
    offsets = produce_confluent(srv.bootstrap, topic, msgs, "gzip", **{"batch.num.messages": 500})
    wait_tiered(srv, topic, {0: len(offsets)})
    rows = segments(srv, topic)
    assert len(rows) >= 3
    cut = rows[1][2] + 1  # everything of the first two segments
    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    (fut,) = admin.delete_records([TopicPartition(topic, 0, cut + 7)]).values()
    assert fut.result(20).low_watermark == cut + 7
    objects = srv.data_dir / "objects"

    def stored() -> set[str]:
        return {str(f.relative_to(objects)) for f in objects.rglob("*.seg")}

    wait_until(
        lambda: not {r[5] for r in rows[:2]} & (stored() | {r[5] for r in segments(srv, topic)}),
        30,
        "segments below the new log start to go",
    )
    assert rows[2][5] in stored()
    got = consume_confluent(srv.bootstrap, topic, 5, start=-2)[:5]
    assert [m.offset for m in got] == list(range(cut + 7, cut + 12))
    assert [m.value for m in got] == [msgs[o].value for o in range(cut + 7, cut + 12)]

    admin.delete_topics([topic])[topic].result(20)
    wait_until(
        lambda: not stored() and not segments(srv, topic, ("local", "uploaded", "deleting")),
        30,
        "a deleted topic's segments to leave the store and the registry",
    )


def test_a_topic_recreated_at_once_starts_from_nothing(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server(*LAYERED_ARGS, "--segment-max-age-ms", "300")
    topic = unique_topic("again")
    create_topic(srv, topic)
    old = corpus(3_000, seed=21)
    produce_confluent(srv.bootstrap, topic, old)
    wait_tiered(srv, topic, {0: len(old)})
    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    admin.delete_topics([topic])[topic].result(20)
    create_topic(srv, topic)  # straight away: within one indexer tick
    new = corpus(500, seed=22)
    produced = {0: with_offsets(new, produce_confluent(srv.bootstrap, topic, new))}
    assert produced[0][0].offset == 0
    wait_tiered(srv, topic, {0: len(new)})
    assert_consumed_exactly(srv, topic, produced)
    srv.stop()
    _assert_documents_exact(srv, topic, {0: len(new)})
