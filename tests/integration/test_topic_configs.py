"""Topic configs and broker flags that change what clients see.

LogAppendTime topics, fetch size limits (KIP-74), DeleteTopics by topic id,
retention by bytes and by time, --default-partitions on auto-create, the
in-order answer to a long-polling Fetch, Produce errors, and kcat.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from .clients import (
    CONSUMERS,
    LOG_APPEND_TIME,
    Msg,
    consume_confluent,
    produce_confluent,
    produce_kafka_python,
    watermarks,
)
from .conftest import Server, unique_topic
from .rawkafka import (
    API_VERSIONS,
    RawKafka,
    Rec,
    build_batch,
    decode_response,
    ms,
    parse_batches,
    request_class,
    schema,
)

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REQUIRED_ACKS = 21
UNKNOWN_TOPIC_ID = 100
OLD_TS = 1_000_000  # 1970-01-01T00:16:40Z
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
KCAT = "/usr/bin/kcat"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(value: datetime.datetime | None) -> int:
    """kio decodes i64 timestamps as aware datetimes and -1 as None."""
    if value is None:
        return -1
    return (value - EPOCH) // datetime.timedelta(milliseconds=1)


def create_topic(server: Server, topic: str, partitions: int = 1, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    nt = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
    admin.create_topics([nt], operation_timeout=10, request_timeout=15)[topic].result(20)


# --------------------------------------------------------------------------- LogAppendTime


def test_log_append_time_topic_stamps_broker_time(server: Server) -> None:
    topic = unique_topic("lat")
    create_topic(server, topic, **{"message.timestamp.type": "LogAppendTime"})
    sent = [
        Msg(b"k%d" % i, b"value %d" % i, (("h", b"%d" % i),), OLD_TS, offset=i) for i in range(10)
    ]
    before = now_ms()
    offsets = produce_confluent(server.bootstrap, topic, sent[:5], **{"linger.ms": 0})
    assert offsets == list(range(5))
    assert produce_kafka_python(server.bootstrap, topic, sent[5:]) == [5, 6, 7, 8, 9]
    with RawKafka(server.bootstrap) as raw:
        resp = raw.request(
            raw.produce_request(
                topic, 0, build_batch([Rec(b"raw", b"raw value")], first_timestamp=OLD_TS)
            )
        )
        (p,) = resp.responses[0].partition_responses
        after = now_ms()
        assert (int(p.error_code), int(p.base_offset)) == (NONE, 10)
        append_time = to_ms(p.log_append_time)
        assert before <= append_time <= after, (
            f"Produce response log_append_time {append_time} outside [{before}, {after}]"
        )
        fetched = parse_batches(bytes(raw.fetch(topic, 0, 0).records or b""))
    # The stored batches are flagged LogAppendTime (attribute bit 3) with maxTimestamp = append
    # time, and their CRCs were recomputed.
    assert [r[0] for b in fetched for r in b.records] == list(range(11))
    for b in fetched:
        assert b.crc_ok, f"batch at {b.base_offset}: CRC does not match"
        assert b.attributes & 0x08, f"batch at {b.base_offset}: attributes {b.attributes:#x}"
        assert before <= b.max_timestamp <= after, (b.base_offset, b.max_timestamp)
    assert fetched[-1].max_timestamp == append_time

    for client, consume in CONSUMERS.items():
        got = consume(server.bootstrap, topic, 11, timestamp_type=LOG_APPEND_TIME)
        assert [(m.offset, m.key, m.value) for m in got] == [
            *((m.offset, m.key, m.value) for m in sent),
            (10, b"raw", b"raw value"),
        ], client
        bad = [(m.offset, m.timestamp) for m in got if not before <= m.timestamp <= after]
        assert not bad, f"{client}: timestamps outside [{before}, {after}]: {bad}"
        assert got[-1].timestamp == append_time, client


def test_create_time_topic_keeps_create_time(server: Server) -> None:
    topic = unique_topic("ct")
    create_topic(server, topic, **{"message.timestamp.type": "CreateTime"})
    sent = [Msg(b"k%d" % i, b"v%d" % i, (), OLD_TS + i, offset=i) for i in range(4)]
    assert produce_confluent(server.bootstrap, topic, sent[:2]) == [0, 1]
    assert produce_kafka_python(server.bootstrap, topic, sent[2:]) == [2, 3]
    with RawKafka(server.bootstrap) as raw:
        resp = raw.request(
            raw.produce_request(topic, 0, build_batch([Rec(b"k4", b"v4")], first_timestamp=OLD_TS))
        )
        (p,) = resp.responses[0].partition_responses
        assert (int(p.error_code), int(p.base_offset)) == (NONE, 4)
        assert p.log_append_time is None, f"CreateTime topic answered {p.log_append_time}"
    expected = [*sent, Msg(b"k4", b"v4", (), OLD_TS, offset=4)]
    for client, consume in CONSUMERS.items():
        got = consume(server.bootstrap, topic, 5)
        assert [(m.offset, m.key, m.value, m.timestamp) for m in got] == [
            (m.offset, m.key, m.value, m.timestamp) for m in expected
        ], client


# --------------------------------------------------------------------------- fetch limits


def _fetch_multi(
    raw: RawKafka,
    topic: str,
    partitions: list[tuple[int, int, int]],
    max_bytes: int,
) -> dict[int, bytes]:
    """Fetch v12 of (partition, offset, partition_max_bytes) with a response max_bytes;
    {partition: records bytes}. Asserts no errors."""
    mod = schema(1, 12)
    req = mod.FetchRequest(
        max_wait=ms(0),
        min_bytes=1,
        max_bytes=max_bytes,
        topics=(
            mod.FetchTopic(
                topic=topic,
                partitions=tuple(
                    mod.FetchPartition(partition=p, fetch_offset=o, partition_max_bytes=pmax)
                    for p, o, pmax in partitions
                ),
            ),
        ),
        forgotten_topics_data=(),
    )
    resp = raw.request(req)
    assert int(resp.error_code) == NONE
    (t,) = resp.responses
    out = {}
    for p in t.partitions:
        assert int(p.error_code) == NONE, (int(p.partition_index), int(p.error_code))
        out[int(p.partition_index)] = bytes(p.records or b"")
    assert sorted(out) == sorted(p for p, _, _ in partitions)
    return out


def test_fetch_size_limits(server: Server) -> None:
    topic = unique_topic("limits")
    create_topic(server, topic, partitions=2)
    # Equal-sized batches of 4 records each, so limits can land exactly on batch boundaries.
    stored: dict[int, list[bytes]] = {0: [], 1: []}
    with RawKafka(server.bootstrap) as raw:
        for part, count in ((0, 5), (1, 3)):
            for i in range(count):
                batch = build_batch(
                    [Rec(b"p%db%dr%d" % (part, i, r), bytes([65 + i]) * 200) for r in range(4)],
                    first_timestamp=1_700_000_000_000,
                )
                assert raw.produce(topic, part, batch) == (NONE, 4 * i)
                stored[part].append(batch)
        size = len(stored[0][0])
        assert all(len(b) == size for bs in stored.values() for b in bs)

        # What the log holds, as fetch returns it (base offsets filled in).
        logs = _fetch_multi(raw, topic, [(0, 0, 1 << 20), (1, 0, 1 << 20)], 1 << 20)
        assert len(logs[0]) == 5 * size and len(logs[1]) == 3 * size
        assert [b.base_offset for b in parse_batches(logs[0])] == [0, 4, 8, 12, 16]
        assert [b.base_offset for b in parse_batches(logs[1])] == [0, 4, 8]

        def check(data: bytes, part: int, whole: int, limit: int | None, case: str) -> None:
            """`whole` complete batches from offset 0; what comes back is a prefix of the log
            (Kafka may add a partial trailing batch; clients drop it) within the limit."""
            bases = [b.base_offset for b in parse_batches(data)]
            assert bases == [4 * i for i in range(whole)], f"{case}: batches at {bases}"
            assert logs[part].startswith(data), f"{case}: not a prefix of the log"
            if limit is not None:
                assert len(data) <= limit, f"{case}: {len(data)} bytes > limit {limit}"

        # partition_max_bytes exactly two batches: exactly those two.
        got = _fetch_multi(raw, topic, [(0, 0, 2 * size)], 1 << 20)
        assert got[0] == logs[0][: 2 * size], "partition_max_bytes = 2 batches"
        # two and a half batches: two whole ones (never the third whole)
        got = _fetch_multi(raw, topic, [(0, 0, 2 * size + size // 2)], 1 << 20)
        check(got[0], 0, 2, 2 * size + size // 2, "partition_max_bytes = 2.5 batches")
        # smaller than one batch: KIP-74 still returns the first batch, whole
        got = _fetch_multi(raw, topic, [(0, 0, size // 2)], 1 << 20)
        assert got[0] == logs[0][:size], "partition_max_bytes < 1 batch (KIP-74)"
        # partition max bytes starting mid-log
        got = _fetch_multi(raw, topic, [(0, 8, 2 * size)], 1 << 20)
        assert got[0] == logs[0][2 * size : 4 * size], "offset 8, partition_max_bytes 2 batches"

        # Response max_bytes = 3 batches: partition 0 takes all of it, partition 1 gets nothing.
        got = _fetch_multi(raw, topic, [(0, 0, 1 << 20), (1, 0, 1 << 20)], 3 * size)
        assert got[0] == logs[0][: 3 * size], "response max_bytes = 3 batches, partition 0"
        assert got[1] == b"", f"response budget used up, yet partition 1 got {len(got[1])} bytes"
        # Response max_bytes < 1 batch: KIP-74's first batch for partition 0, nothing after it.
        got = _fetch_multi(raw, topic, [(0, 0, 1 << 20), (1, 0, 1 << 20)], size // 2)
        assert got[0] == logs[0][:size], "response max_bytes < 1 batch, partition 0 (KIP-74)"
        assert got[1] == b"", f"KIP-74 gives one batch only, partition 1 got {len(got[1])} bytes"
        # Response max_bytes = 6 batches: all 5 of partition 0, exactly 1 of partition 1.
        got = _fetch_multi(raw, topic, [(0, 0, 1 << 20), (1, 0, 1 << 20)], 6 * size)
        assert got[0] == logs[0], "response max_bytes = 6 batches, partition 0"
        assert got[1] == logs[1][:size], "response max_bytes = 6 batches, partition 1"
        # The request order decides who goes first: partition 1 first, then 0 gets the rest.
        got = _fetch_multi(raw, topic, [(1, 0, 1 << 20), (0, 0, 1 << 20)], 4 * size)
        assert got[1] == logs[1], "partition 1 first, response max_bytes = 4 batches"
        check(got[0], 0, 1, size, "partition 0 second, one batch of budget left")
        # partition_max_bytes and max_bytes together: each partition capped at 2 batches.
        got = _fetch_multi(raw, topic, [(0, 0, 2 * size), (1, 0, 2 * size)], 1 << 20)
        assert got[0] == logs[0][: 2 * size] and got[1] == logs[1][: 2 * size]
        # the second partition's partition_max_bytes is below one batch: no KIP-74 for it
        got = _fetch_multi(raw, topic, [(0, 0, 1 << 20), (1, 0, size // 2)], 1 << 20)
        assert got[0] == logs[0]
        check(got[1], 1, 0, size // 2, "second partition, partition_max_bytes < 1 batch")


# --------------------------------------------------------------------------- DeleteTopics by id


def _metadata_v12(raw: RawKafka, topic: str) -> Any:
    mod = schema(3, 12)
    resp = raw.request(
        mod.MetadataRequest(
            topics=(mod.MetadataRequestTopic(topic_id=None, name=topic),),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
    )
    (t,) = resp.topics
    return t


def _delete_by_id(raw: RawKafka, topic_id: uuid.UUID) -> Any:
    mod = schema(20, 6)
    resp = raw.request(
        mod.DeleteTopicsRequest(
            topics=(mod.DeleteTopicState(name=None, topic_id=topic_id),), timeout=ms(10_000)
        )
    )
    (r,) = resp.responses
    return r


def test_delete_topic_by_id(server: Server) -> None:
    topic = unique_topic("delid")
    create_topic(server, topic, partitions=2)
    with RawKafka(server.bootstrap) as raw:
        assert raw.produce(topic, 1, build_batch([Rec(b"k", b"v")])) == (NONE, 0)
        t = _metadata_v12(raw, topic)
        assert int(t.error_code) == NONE
        topic_id = t.topic_id
        assert isinstance(topic_id, uuid.UUID) and topic_id.int != 0, topic_id

        r = _delete_by_id(raw, topic_id)
        assert (int(r.error_code), r.name, r.topic_id) == (NONE, topic, topic_id), r
        gone = _metadata_v12(raw, topic)
        assert int(gone.error_code) == UNKNOWN_TOPIC_OR_PARTITION, gone
        assert topic not in server.topics()

        # the same id again, and an id that never existed
        for tid in (topic_id, uuid.uuid4()):
            r = _delete_by_id(raw, tid)
            assert int(r.error_code) == UNKNOWN_TOPIC_ID, (tid, r)
            assert r.topic_id == tid, r


# --------------------------------------------------------------------------- retention


def _log_files(server: Server, topic: str, partition: int = 0) -> list[Path]:
    return sorted((server.data_dir / "logs" / f"{topic}-{partition}").glob("*.log"))


def _produce_one_per_batch(server: Server, topic: str, msgs: list[Msg]) -> list[int]:
    return produce_confluent(
        server.bootstrap, topic, msgs, **{"linger.ms": 0, "batch.num.messages": 1}
    )


def _settled_watermarks(server: Server, topic: str) -> tuple[int, int]:
    """(low, high) once retention has moved the log start above 0 and two more retention
    passes (at --retention-check-ms 200) changed nothing."""
    deadline = time.monotonic() + 15
    marks = (0, -1)
    while time.monotonic() < deadline:
        again = watermarks(server.bootstrap, topic)
        if again == marks and marks[0] > 0:
            return marks
        marks = again
        time.sleep(0.5)
    raise AssertionError(f"retention did not settle on {topic} in 15s; watermarks {marks}")


def test_retention_bytes_and_ms(fresh_server: Callable[..., Server]) -> None:
    server = fresh_server("--retention-check-ms", "200", "--segment-bytes", "2000")
    by_bytes = unique_topic("retb")
    by_time = unique_topic("retms")
    create_topic(server, by_bytes, **{"retention.bytes": "5000", "segment.bytes": "2000"})
    create_topic(server, by_time, **{"retention.ms": "600000", "segment.bytes": "2000"})

    # retention.bytes: 100 records of 100-byte values, one per batch (~170 bytes each).
    now = now_ms()
    msgs = [Msg(b"%03d" % i, bytes([48 + i % 10]) * 100, (), now, offset=i) for i in range(100)]
    assert _produce_one_per_batch(server, by_bytes, msgs) == list(range(100))
    low, high = _settled_watermarks(server, by_bytes)
    assert high == 100
    assert 0 < low < 100
    files = _log_files(server, by_bytes)
    assert files, "no .log files left"
    assert files[0].name == f"{low:020d}.log", ([f.name for f in files], low)
    sizes = [f.stat().st_size for f in files]
    # what is left is at most retention.bytes plus the segment that straddles it
    assert sum(sizes) <= 5000 + 2000, sizes
    assert all(s <= 2000 for s in sizes), sizes
    got = consume_confluent(server.bootstrap, by_bytes, high - low, start=-2)  # OFFSET_BEGINNING
    assert [(m.offset, m.key, m.value) for m in got] == [
        (m.offset, m.key, m.value) for m in msgs[low:]
    ]

    # retention.ms = 10 min: 40 records from an hour ago go, the 40 from now stay.
    hour_ago = now - 3_600_000
    old = [Msg(b"old%d" % i, b"o" * 100, (), hour_ago + i, offset=i) for i in range(40)]
    new = [Msg(b"new%d" % i, b"n" * 100, (), now_ms(), offset=40 + i) for i in range(40)]
    assert _produce_one_per_batch(server, by_time, old + new) == list(range(80))
    low, high = _settled_watermarks(server, by_time)
    assert high == 80
    # Whole segments go: all that hold only old records, none that hold a new one.
    assert 0 < low <= 40, low
    files = _log_files(server, by_time)
    assert files[0].name == f"{low:020d}.log", ([f.name for f in files], low)
    if low < 40:
        # the first segment left straddles the boundary (its newest record is new)
        nxt = [int(f.stem) for f in files[1:]]
        assert not nxt or nxt[0] > 40, ([f.name for f in files], low)
    got = consume_confluent(server.bootstrap, by_time, high - low, start=-2)
    assert [(m.offset, m.key, m.timestamp) for m in got] == [
        (m.offset, m.key, m.timestamp) for m in (old + new)[low:]
    ]


# --------------------------------------------------------------------------- auto-create


def test_auto_create_uses_default_partitions(fresh_server: Callable[..., Server]) -> None:
    server = fresh_server("--default-partitions", "3")
    topic = unique_topic("auto3")
    msgs = [Msg(b"k", b"v", (), now_ms())]
    assert produce_confluent(server.bootstrap, topic, msgs) == [0]
    md = AdminClient({"bootstrap.servers": server.bootstrap}).list_topics(topic, timeout=10)
    t = md.topics[topic]
    assert t.error is None, t.error
    assert sorted(t.partitions) == [0, 1, 2]
    with RawKafka(server.bootstrap) as raw:
        (mt,) = raw.metadata([topic]).topics
        assert int(mt.error_code) == NONE
        assert sorted(int(p.partition_index) for p in mt.partitions) == [0, 1, 2]
    assert server.topics()[topic] == {0: (0, 1), 1: (0, 0), 2: (0, 0)}


# --------------------------------------------------------------------------- pipelining


def test_long_poll_fetch_answers_before_later_request(server: Server) -> None:
    topic = unique_topic("order")
    create_topic(server, topic)
    with RawKafka(server.bootstrap, timeout=15) as raw:
        fetch_cid = raw.send(raw.fetch_request(topic, 0, 0, max_wait_ms=1500, min_bytes=1))
        av_cls = request_class(API_VERSIONS, 3)
        av_cid = raw.send(av_cls(client_software_name="rawkafka", client_software_version="1"))
        sent = time.monotonic()
        first = raw.recv_frame()
        first_at = time.monotonic() - sent
        second = raw.recv_frame()
        second_at = time.monotonic() - sent
    cids = [int.from_bytes(f[:4], "big", signed=True) for f in (first, second)]
    assert cids == [fetch_cid, av_cid], (
        f"responses came as {cids} at {first_at:.2f}s/{second_at:.2f}s; "
        f"fetch was {fetch_cid}, ApiVersions {av_cid}"
    )
    _, fetch = decode_response(1, 12, first)
    assert int(fetch.error_code) == NONE
    (p,) = fetch.responses[0].partitions
    assert int(p.error_code) == NONE and not p.records and int(p.high_watermark) == 0
    _, av = decode_response(API_VERSIONS, 3, second)
    assert int(av.error_code) == NONE and av.api_keys
    assert 1.4 <= first_at < 6.0, f"empty fetch with max_wait 1.5s answered after {first_at:.2f}s"
    assert second_at >= first_at


# --------------------------------------------------------------------------- produce errors


def test_produce_errors(server: Server) -> None:
    topic = unique_topic("perr")
    create_topic(server, topic, partitions=2)
    with RawKafka(server.bootstrap) as raw:
        batch = build_batch([Rec(b"k", b"v")])
        assert raw.produce(topic, 2, batch)[0] == UNKNOWN_TOPIC_OR_PARTITION
        assert raw.produce(topic, 99, batch)[0] == UNKNOWN_TOPIC_OR_PARTITION
        for acks in (2, -2, 3):
            resp = raw.request(raw.produce_request(topic, 0, batch, acks=acks))
            (t,) = resp.responses
            (p,) = t.partition_responses
            assert (t.name, int(p.index), int(p.error_code)) == (
                topic,
                0,
                INVALID_REQUIRED_ACKS,
            ), f"acks={acks}: {p}"
        # nothing was written by any of them
        assert int(raw.list_offset(topic, 0, -1).offset) == 0
        assert raw.produce(topic, 1, batch) == (NONE, 0)
    assert server.topics()[topic] == {0: (0, 0), 1: (0, 1)}


# --------------------------------------------------------------------------- kcat


def test_kcat_lists_broker_and_topic(server: Server) -> None:
    """kcat -L -J when installed; otherwise (e.g. in CI) librdkafka's own Metadata listing
    through confluent's list_topics, which is what kcat -L prints."""
    topic = unique_topic("kcat")
    create_topic(server, topic, partitions=2)
    if shutil.which(KCAT) is not None:
        out = subprocess.run(
            [KCAT, "-L", "-b", server.bootstrap, "-J", "-m", "10"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        md = json.loads(out.stdout)
        brokers = [(b["id"], b["name"]) for b in md["brokers"]]
        topics = {t["topic"]: t for t in md["topics"]}
        assert topic in topics, sorted(topics)
        assert "error" not in topics[topic], topics[topic]
        parts = sorted(
            (p["partition"], p["leader"], p["replicas"], p["isrs"])
            for p in topics[topic]["partitions"]
        )
    else:
        cmd = AdminClient({"bootstrap.servers": server.bootstrap}).list_topics(timeout=10)
        brokers = [(b.id, f"{b.host}:{b.port}") for b in cmd.brokers.values()]
        assert topic in cmd.topics, sorted(cmd.topics)
        t = cmd.topics[topic]
        assert t.error is None, t.error
        parts = sorted(
            (
                p.id,
                p.leader,
                [{"id": r} for r in p.replicas],
                [{"id": r} for r in p.isrs],
            )
            for p in t.partitions.values()
        )
    assert len(brokers) == 1, brokers
    (node_id, name) = brokers[0]
    assert name == server.bootstrap
    assert parts == [
        (0, node_id, [{"id": node_id}], [{"id": node_id}]),
        (1, node_id, [{"id": node_id}], [{"id": node_id}]),
    ]
