"""Log compaction end to end with real clients: a compacted topic created and described with
the AdminClient; 100k updates over 1k keys with tombstones cleaned to the latest record per
key with their original offsets, tombstones kept until the delete horizon their first clean
stamps (KIP-534), whatever their own timestamps; the same after
tiering, a restart and from the object store; a group committed inside a gap; SIGKILLs while
the cleaner works; search following the log through compaction, DeleteRecords and
DeleteTopics.

CHRONIK_COMPACTION_SEED=<seed> replays the SIGKILL trials; the seed is in every failure
message there."""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable

import confluent_kafka
import httpx
from confluent_kafka import TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from tests.integration.clients import (
    Msg,
    confluent_consumer,
    produce_confluent,
    watermarks,
    with_offsets,
)
from tests.integration.compacted import (
    DAY,
    HOUR,
    assert_live_segments_tile,
    assert_search_follows,
    assert_state,
    changelog,
    cleaner_checkpoint,
    compacted_state,
    consume_all,
    partition_info,
    search,
    search_hits,
    segment_base_at,
)
from tests.integration.conftest import Server, unique_topic
from tests.integration.layered import (
    LAYERED_ARGS,
    all_indexed,
    fetch_bytes,
    metrics,
    produce_mixed,
    registry,
    segments,
    wait_tiered,
    wait_until,
)

# Segments of 7,000 records sealed at least every segment.ms, a cleaner pass every 300 ms.
CLEANER_ARGS = (*LAYERED_ARGS, "--segment-max-records", "7000", "--cleaner-interval-ms", "300")
COMPACTION_DEFAULTS = {
    "cleanup.policy": "delete",
    "delete.retention.ms": "86400000",
    "min.cleanable.dirty.ratio": "0.5",
    "min.compaction.lag.ms": "0",
    "max.compaction.lag.ms": "9223372036854775807",
    "segment.ms": "604800000",
}


def _admin(srv: Server) -> AdminClient:
    return AdminClient({"bootstrap.servers": srv.bootstrap})


def _create(srv: Server, topic: str, **config: str) -> None:
    admin = _admin(srv)  # alive until its futures are done
    admin.create_topics([NewTopic(topic, 1, config=config)], operation_timeout=10)[topic].result(20)


def _describe(srv: Server, topic: str) -> dict[str, confluent_kafka.admin.ConfigEntry]:
    res = ConfigResource(confluent_kafka.admin.ResourceType.TOPIC, topic)
    admin = _admin(srv)
    return admin.describe_configs([res])[res].result(20)


def _alter(srv: Server, topic: str, **config: str) -> None:
    entries = [
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()
    ]
    res = ConfigResource(
        confluent_kafka.admin.ResourceType.TOPIC, topic, incremental_configs=entries
    )
    admin = _admin(srv)
    admin.incremental_alter_configs([res])[res].result(20)


def test_compacted_topic_created_and_described_back_like_kafka_connect(server: Server) -> None:
    # Kafka Connect creates its internal topics with only cleanup.policy=compact and checks
    # the policy with DescribeConfigs (TopicAdmin.verifyTopicCleanupPolicyOnlyCompact).
    topic = unique_topic("connect-offsets")
    _create(server, topic, **{"cleanup.policy": "compact"})
    configs = _describe(server, topic)
    policy = configs["cleanup.policy"]
    assert policy.value == "compact" and not policy.is_default
    assert policy.source == confluent_kafka.admin.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    for name, default in COMPACTION_DEFAULTS.items():
        if name == "cleanup.policy":
            continue
        entry = configs[name]
        assert (entry.value, entry.is_default) == (default, True), name
        assert entry.source == confluent_kafka.admin.ConfigSource.DEFAULT_CONFIG.value, name
    _alter(server, topic, **{"cleanup.policy": "compact,delete", "delete.retention.ms": "1000"})
    configs = _describe(server, topic)
    assert configs["cleanup.policy"].value == "compact,delete"
    assert configs["delete.retention.ms"].value == "1000"


def _wait_cleaned_to(srv: Server, topic: str, end: Callable[[], int | None], what: str) -> int:
    """Wait for the cleaner checkpoint to reach `end()`. An end of 0 with a sealed segment
    at 0 (it holds the last offset, so it is never cleaned) is reached with no run at all;
    an end of 0 because nothing is sealed yet is not."""

    def done() -> tuple[int] | None:
        cp = cleaner_checkpoint(srv, topic)
        want = end()
        if cp is None:
            sealed_at_0 = any(r[0] == 0 and r[1] == 0 for r in segments(srv, topic))
            return (0,) if want == 0 and sealed_at_0 else None
        return (cp[0],) if cp[0] == want else None

    return int(wait_until(done, 60, what)[0])


def _wait_cleaned_past(srv: Server, topic: str, at: Callable[[], int | None], what: str) -> int:
    def done() -> int | None:
        cp = cleaner_checkpoint(srv, topic)
        want = at()
        return cp[0] if cp is not None and want is not None and cp[0] >= want else None

    return int(wait_until(done, 60, what))


def _group_resumes_in_gap(srv: Server, topic: str, state: list[Msg], at: int) -> None:
    """A group committed at `at`, an offset the cleaner removed, resumes at the next kept
    record without OFFSET_OUT_OF_RANGE (auto.offset.reset=error would report it)."""
    group = unique_topic("group")
    c = confluent_consumer(srv.bootstrap, **{"group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, at)], asynchronous=False)
    c.close()
    c = confluent_consumer(srv.bootstrap, **{"group.id": group, "auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0)])  # from the committed offset
        got: list[int] = []
        deadline = time.monotonic() + 20
        while len(got) < 5 and time.monotonic() < deadline:
            for m in c.consume(num_messages=5, timeout=0.5):
                assert m.error() is None, f"resuming at {at}: {m.error()}"
                got.append(m.offset())
    finally:
        c.close()
    want = [m.offset for m in state if m.offset >= at][:5]
    assert got[:5] == want, (at, got, want)


def test_100k_updates_compact_to_latest_per_key_on_every_layer(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server(*CLEANER_ARGS)
    topic = unique_topic("compact")
    # The first 90k records are two hours old, the last 10k new: with min.compaction.lag.ms
    # of an hour only the old part is cleaned, so a tail stays uncleaned for as long as the
    # test looks.
    _create(
        srv,
        topic,
        **{
            "cleanup.policy": "compact",
            "segment.ms": "1000",
            "min.cleanable.dirty.ratio": "0.01",
            "min.compaction.lag.ms": str(HOUR),
            "delete.retention.ms": str(DAY),
        },
    )
    described = _describe(srv, topic)
    assert described["min.compaction.lag.ms"].value == str(HOUR)
    assert described["max.compaction.lag.ms"].value == COMPACTION_DEFAULTS["max.compaction.lag.ms"]
    now = int(time.time() * 1000)
    rnd = random.Random(15)
    msgs = changelog(100_000, 1000, rnd, lambda i: now - 2 * HOUR + i if i < 90_000 else now)
    msgs[-1] = Msg(msgs[-1].key, None, (), now)  # the tail ends with a tombstone
    produced = produce_mixed(srv, topic, msgs)[0]  # every codec, kafka-python for the tail
    assert [m.offset for m in produced] == list(range(100_000))
    young = next(m.offset for m in produced if m.timestamp >= now)

    # 1. Cleaned below the segment holding the first young record; tombstones kept, two
    # hours old by their timestamps, with a delete horizon a day from their first clean.
    cleaned = _wait_cleaned_to(
        srv, topic, lambda: segment_base_at(srv, topic, young), "the old part to be cleaned"
    )
    assert 0 < cleaned <= young < 100_000
    state = compacted_state(produced, cleaned, lambda m: False)
    assert any(m.value is None and m.offset < cleaned for m in state)
    assert len([m for m in state if m.offset < cleaned]) <= 1000
    info = partition_info(srv, topic)
    assert info["last_compaction"] is not None and info["dirty_ratio"] is not None
    assert (info["log_start_offset"], info["log_end_offset"]) == (0, 100_000)
    assert_state(srv, topic, state, "cleaned below the young tail")
    wait_until(lambda: all_indexed(srv, topic, {0: 100_000}), 60, "indexing")
    assert_search_follows(srv, topic, produced, state, rnd, "cleaned below the young tail")
    gap = next(o for o in range(1, cleaned) if o not in {m.offset for m in state})
    _group_resumes_in_gap(srv, topic, state, gap)
    m = metrics(srv)
    assert m[("chronik_cleaner_runs_total", ())] >= 1
    assert (
        m[("chronik_cleaner_bytes_total", (("direction", "read"),))]
        > m[("chronik_cleaner_bytes_total", (("direction", "written"),))]
    )

    # 2. Everything cleanable, delete.retention.ms 100 ms. The tail's first clean keeps its
    # tombstones and stamps their batches with a horizon 100 ms on; the next clean, which a
    # record produced after it brings, drops them. (Step 1's keep their day-long horizon,
    # but the tail updates nearly every key: those go as superseded.)
    wait_until(
        lambda: any(r[2] == 99_999 for r in segments(srv, topic)), 60, "the last segment sealed"
    )
    _alter(srv, topic, **{"min.compaction.lag.ms": "0", "delete.retention.ms": "100"})
    # At least all but the segment holding the log's last offset (which a cleaner that spares
    # it, as Kafka spares the active segment, leaves for the next run).
    tail_end = _wait_cleaned_past(
        srv, topic, lambda: segment_base_at(srv, topic, 99_999), "the tail to be cleaned"
    )
    state = compacted_state(produced, tail_end, lambda m: False)
    assert any(m.value is None and cleaned <= m.offset < tail_end for m in state)
    assert_state(srv, topic, state, "the tail cleaned, its tombstones within their horizon")
    time.sleep(0.2)
    value = b'{"rev": "r9999999", "pad": "after the horizon"}'  # a key of its own
    after = [Msg(b"k5000", value, (), int(time.time() * 1000))]
    produced += with_offsets(after, produce_confluent(srv.bootstrap, topic, after, "none"))
    end = 100_001
    assert produced[-1].offset == end - 1
    cleaned_end = _wait_cleaned_past(
        srv, topic, lambda: tail_end + 1, "the clean after the tail's horizon"
    )
    state = compacted_state(produced, cleaned_end, lambda m: cleaned <= m.offset < tail_end)
    assert not any(m.value is None and cleaned <= m.offset < tail_end for m in state)
    assert_state(srv, topic, state, "the tail's tombstones gone after their horizon")
    wait_until(lambda: all_indexed(srv, topic, {0: end}), 60, "indexing")
    assert_search_follows(srv, topic, produced, state, rnd, "cleaned after the horizon")

    # 3. Tiered (WAL trimmed), after a restart, and from the object store alone.
    wait_tiered(srv, topic, {0: end})
    assert_live_segments_tile(srv, topic, end)
    srv.restart()
    assert_state(srv, topic, state, "after a restart")
    assert watermarks(srv.bootstrap, topic) == (0, end)
    srv.stop()
    shutil.rmtree(srv.data_dir / "segments")
    srv.start()
    before = fetch_bytes(srv, "object_store")
    assert_state(srv, topic, state, "from the object store")
    assert watermarks(srv.bootstrap, topic) == (0, end)
    assert fetch_bytes(srv, "object_store") > before
    _group_resumes_in_gap(srv, topic, state, gap)
    assert_search_follows(srv, topic, produced, state, rnd, "from the object store")
    assert partition_info(srv, topic)["last_compaction"] is not None


TRIALS = 10


def _seed() -> int:
    env = os.environ.get("CHRONIK_COMPACTION_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 32)


def _cleaner_working(srv: Server, topic: str) -> bool:
    # run_clean's work directory exists while the pool process rewrites a partition.
    return (srv.data_dir / "clean" / f"{topic}-0").exists()


def _assert_objects_registered(srv: Server, topic: str) -> None:
    """Nothing reaches the object store before its cleaner run is swapped in."""
    with registry(srv) as db:
        keys = {r[0] for r in db.execute("SELECT object_key FROM segments WHERE topic=?", (topic,))}
    objects = srv.data_dir / "objects"
    stored = {str(f.relative_to(objects)) for f in objects.rglob("*.seg")}
    assert stored <= keys, sorted(stored - keys)[:5]


def test_sigkill_while_cleaning_loses_nothing_and_mixes_nothing(
    fresh_server: Callable[..., Server],
) -> None:
    seed = _seed()
    print(f"CHRONIK_COMPACTION_SEED={seed}")
    rnd = random.Random(seed)
    # The WAL and memory tail keep the uncompacted bytes here: reads below the cleaned end
    # must not come from them, also after each restart.
    srv = fresh_server(
        "--segment-max-records",
        "2500",
        "--cleaner-interval-ms",
        "100",
        "--tiering-interval-ms",
        "200",
        "--index-commit-ms",
        "200",
    )
    topic = unique_topic("kill-clean")
    _create(
        srv,
        topic,
        **{
            "cleanup.policy": "compact",
            "segment.ms": "500",
            "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": str(DAY),
        },
    )
    now = int(time.time() * 1000)
    produced: list[Msg] = []
    working = 0
    t0 = time.monotonic()
    for trial in range(TRIALS):
        where = f"seed {seed} trial {trial} (CHRONIK_COMPACTION_SEED={seed})"
        msgs = changelog(10_000, 400, rnd, lambda i: now)
        # Half the tombstones are two days old by their timestamps: they stay all the same,
        # until a day after the run that first keeps them (KIP-534's delete horizon).
        msgs = [
            Msg(m.key, m.value, (), now - 2 * DAY) if m.value is None and rnd.random() < 0.5 else m
            for m in msgs
        ]
        codec = rnd.choice(("none", "gzip", "snappy", "lz4", "zstd"))
        offsets = produce_confluent(srv.bootstrap, topic, msgs, codec)
        assert offsets[0] == len(produced), where
        produced += with_offsets(msgs, offsets)
        deadline = time.monotonic() + 10
        while not _cleaner_working(srv, topic) and time.monotonic() < deadline:
            time.sleep(0.002)
        # Every other kill inside the rewrite, the others later in it, at the swap, the
        # uploads of its results or the deletes of its sources.
        time.sleep(rnd.uniform(0, 0.03) if trial % 2 == 0 else rnd.uniform(0.03, 0.5))
        working += _cleaner_working(srv, topic)
        srv.kill()
        srv.start()
        end = len(produced)
        assert watermarks(srv.bootstrap, topic) == (0, end), where
        assert_live_segments_tile(srv, topic, end)
        _assert_objects_registered(srv, topic)
        # All but the segment holding the last offset, which the cleaner never cleans.
        cleaned = _wait_cleaned_to(
            srv,
            topic,
            lambda end=end: segment_base_at(srv, topic, end - 1),
            f"the log to be cleaned; {where}",
        )
        state = compacted_state(produced, cleaned, lambda m: False)
        assert_state(srv, topic, state, where)
    print(f"seed {seed}: {TRIALS} kills, {working} inside a rewrite, {time.monotonic() - t0:.1f}s")
    assert any(m.value is None for m in state)
    assert len([m for m in state if m.offset < cleaned]) <= 400
    wait_until(lambda: all_indexed(srv, topic, {0: end}), 60, "indexing")
    assert search_hits(srv, topic, "*")[0] == len(state), f"seed {seed}"
    srv.restart()
    assert_state(srv, topic, state, f"after {TRIALS} kills and a restart (seed {seed})")


def test_search_follows_delete_records_and_delete_topics(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server(*CLEANER_ARGS, "--segment-max-records", "2000")
    topic = unique_topic("search-drop")
    _create(
        srv,
        topic,
        **{"cleanup.policy": "compact", "segment.ms": "500", "min.cleanable.dirty.ratio": "0.01"},
    )
    rnd = random.Random(4)
    now = int(time.time() * 1000)
    msgs = changelog(20_000, 5000, rnd, lambda i: now)
    produced = with_offsets(msgs, produce_confluent(srv.bootstrap, topic, msgs, "zstd"))
    # All but the segment holding the last offset, which the cleaner never cleans.
    cleaned = _wait_cleaned_to(
        srv, topic, lambda: segment_base_at(srv, topic, 19_999), "the log to be cleaned"
    )
    wait_until(lambda: all_indexed(srv, topic, {0: 20_000}), 60, "indexing")
    state = compacted_state(produced, cleaned, lambda m: False)
    assert_search_follows(srv, topic, produced, state, rnd, "cleaned")

    # The cut inside the log: kept records on both sides of it.
    cut = state[len(state) // 2].offset + 1
    admin = _admin(srv)
    (fut,) = admin.delete_records([TopicPartition(topic, 0, cut)]).values()
    assert fut.result(20).low_watermark == cut
    left = [m for m in state if m.offset >= cut]
    assert search_hits(srv, topic, "*")[0] == len(left)
    for m in rnd.sample([m for m in state if m.offset < cut and m.value is not None], 20):
        word = m.value.split(b'"')[3].decode()  # type: ignore[union-attr]
        assert search_hits(srv, topic, word)[0] == 0, f"offset {m.offset} below the log start"
        total, hits = search_hits(srv, topic, f"key:{m.key.decode()}")  # type: ignore[union-attr]
        assert all(o >= cut for o in hits) and total == len(hits), (m.offset, hits)
    hist = httpx.get(srv.http + "/search/histogram", params={"topic": topic}, timeout=30).json()
    assert hist["total"] == sum(b["count"] for b in hist["buckets"]) == len(left), hist
    terms = httpx.get(
        srv.http + "/search/terms", params={"topic": topic, "field": "partition"}, timeout=30
    ).json()
    assert [(t["value"], t["count"]) for t in terms["terms"]] == [(0, len(left))], terms
    assert consume_all(srv, topic, start=cut) == left

    admin.delete_topics([topic])[topic].result(20)
    r = search(srv, topic, "*")
    assert r.status_code == 404, r.text
