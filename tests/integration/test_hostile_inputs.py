"""Hostile values in the fields that index partitions, offsets, sessions and byte counts
(issue 12, point 7): each gets the error code Kafka gives and the connection keeps serving.

The admin APIs (CreateTopics, CreatePartitions, DeleteTopics, ...) are in
test_hostile_admin.py.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from .conftest import Server, unique_topic
from .rawkafka import RawKafka, Rec, build_batch, ms, parse_batches, request_class, schema

NONE = 0
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
UNSUPPORTED_VERSION = 35
INVALID_REQUEST = 42
FETCH_SESSION_ID_NOT_FOUND = 70
UNKNOWN_TOPIC_ID = 100
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# Kafka's broker fetch.max.bytes default: no fetch response carries more.
FETCH_MAX_BYTES = 57_671_680


def assert_serving(raw: RawKafka) -> None:
    """The connection that carried the hostile request still answers on it."""
    assert raw.api_versions().error_code == NONE
    assert raw.metadata([]).brokers


def create_topic(raw: RawKafka, partitions: int = 1, prefix: str = "hostile") -> str:
    topic = unique_topic(prefix)
    raw.create_topic(topic, partitions)
    return topic


def make(entity: type, **values: Any) -> Any:
    """An entity from the values its version has (older versions lack some fields)."""
    names = {f.name for f in dataclasses.fields(entity)}
    return entity(**{k: v for k, v in values.items() if k in names})


def _fetch_body(
    topic: str,
    partitions: list[tuple[int, int, int]],
    version: int = 12,
    topic_id: uuid.UUID | None = None,
    **top: Any,
) -> Any:
    """A fetch of (partition, offset, partition_max_bytes) entries; `top` overrides
    request-level fields."""
    mod = schema(1, version)
    fields: dict[str, Any] = {
        "max_wait": ms(0),
        "min_bytes": 1,
        "max_bytes": 1 << 20,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "forgotten_topics_data": (),
        "rack_id": "",
        "replica_id": -1,
        **top,
    }
    name_field = {"topic_id": topic_id} if version >= 13 else {"topic": topic}
    fields["topics"] = (
        mod.FetchTopic(
            **name_field,
            partitions=tuple(
                make(
                    mod.FetchPartition,
                    partition=p,
                    current_leader_epoch=-1,
                    fetch_offset=o,
                    last_fetched_epoch=-1,
                    log_start_offset=-1,
                    partition_max_bytes=m,
                )
                for p, o, m in partitions
            ),
        ),
    )
    return make(mod.FetchRequest, **fields)


def topic_meta(raw: RawKafka, topic: str) -> Any:
    """The Metadata v12 entry of a topic, which carries its id."""
    mod = schema(3, 12)
    resp = raw.request(
        mod.MetadataRequest(
            topics=(mod.MetadataRequestTopic(topic_id=uuid.UUID(int=0), name=topic),),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
    )
    (t,) = resp.topics
    return t


def _fetch_codes(raw: RawKafka, body: Any) -> list[int]:
    resp = raw.request(body)
    assert resp.error_code == NONE
    return [int(p.error_code) for t in resp.responses for p in t.partitions]


def _produce(raw: RawKafka, topic: str, n: int = 3) -> None:
    err, _ = raw.produce(topic, 0, build_batch([Rec(b"k", b"v%d" % i) for i in range(n)]))
    assert err == NONE


# --------------------------------------------------------------------------- Fetch


def test_fetch_partition_index_out_of_range(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        body = _fetch_body(topic, [(-1, 0, 1000), (INT32_MAX, 0, 1000), (-(2**31), 0, 1000)])
        assert _fetch_codes(raw, body) == [UNKNOWN_TOPIC_OR_PARTITION] * 3
        assert_serving(raw)


def test_fetch_offset_out_of_range(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        _produce(raw, topic)
        body = _fetch_body(topic, [(0, -1, 1000), (0, INT64_MIN, 1000), (0, 4, 1000)])
        assert _fetch_codes(raw, body) == [OFFSET_OUT_OF_RANGE] * 3
        body = _fetch_body(topic, [(0, INT64_MAX, 1000)])
        assert _fetch_codes(raw, body) == [OFFSET_OUT_OF_RANGE]
        assert_serving(raw)


def test_fetch_negative_byte_limits_still_return_the_first_batch(server: Server) -> None:
    """Kafka fails the read with an IllegalArgumentException (UNKNOWN_SERVER_ERROR); a
    limit below one batch is treated as KIP-74's "at least one batch" instead, as a zero
    limit is in Kafka."""
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        _produce(raw, topic)
        for top, part in ((-1, 1000), (1000, -1), (INT32_MAX * -1 - 1, -(2**31)), (0, 0)):
            resp = raw.request(_fetch_body(topic, [(0, 0, part)], max_bytes=top))
            ((p,),) = [t.partitions for t in resp.responses]
            assert p.error_code == NONE
            (batch,) = parse_batches(bytes(p.records))
            assert [r[0] for r in batch.records] == [0, 1, 2]
        assert_serving(raw)


def test_fetch_max_bytes_is_capped_at_kafkas_fetch_max_bytes(server: Server) -> None:
    """A fetch asking for 2 GiB gets at most fetch.max.bytes (55 MiB) back, not the whole
    partition read into memory."""
    with RawKafka(server.bootstrap, timeout=60) as raw:
        topic = create_topic(raw)
        value = b"x" * 1_000_000
        for _ in range(8):
            records = b"".join(build_batch([Rec(None, value)]) for _ in range(8))
            assert raw.produce(topic, 0, records)[0] == NONE
        for version in (4, 12):
            body = _fetch_body(topic, [(0, 0, INT32_MAX)], version=version, max_bytes=INT32_MAX)
            resp = raw.request(body, timeout=60)
            ((p,),) = [t.partitions for t in resp.responses]
            assert p.error_code == NONE
            assert 0 < len(bytes(p.records)) <= FETCH_MAX_BYTES
        assert_serving(raw)


def test_fetch_max_wait_and_min_bytes_extremes(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        started = time.monotonic()
        body = _fetch_body(topic, [(0, 0, 1000)], max_wait=ms(-1), min_bytes=INT32_MAX)
        assert _fetch_codes(raw, body) == [NONE]
        body = _fetch_body(topic, [(0, 0, 1000)], max_wait=ms(300), min_bytes=INT32_MAX)
        assert _fetch_codes(raw, body) == [NONE]
        assert time.monotonic() - started < 5
        assert_serving(raw)


def test_fetch_sessions_follow_kafkas_rules(server: Server) -> None:
    """Epoch 0 or -1 is a full fetch whatever the session id (Kafka closes that session and
    serves it); any other epoch names an incremental session, and this broker has none."""
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        _produce(raw, topic)
        for session_id, epoch in ((7, -1), (7, 0), (-5, -1), (INT32_MAX, 0), (0, 0)):
            resp = raw.request(
                _fetch_body(topic, [(0, 0, 1000)], session_id=session_id, session_epoch=epoch)
            )
            assert (resp.error_code, resp.session_id) == (NONE, 0), (session_id, epoch)
            ((p,),) = [t.partitions for t in resp.responses]
            assert p.error_code == NONE and p.records
        for session_id, epoch in ((0, 1), (0, -7), (7, 3), (-1, INT32_MAX)):
            resp = raw.request(
                _fetch_body(topic, [(0, 0, 1000)], session_id=session_id, session_epoch=epoch)
            )
            assert resp.error_code == FETCH_SESSION_ID_NOT_FOUND, (session_id, epoch)
            assert (resp.session_id, resp.responses) == (0, ())
        assert_serving(raw)


def test_fetch_by_unknown_topic_id_and_forgotten_topics(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        _produce(raw, topic)
        for unknown in (uuid.uuid4(), uuid.UUID(int=0)):
            body = _fetch_body(topic, [(0, 0, 1000)], version=13, topic_id=unknown)
            assert _fetch_codes(raw, body) == [UNKNOWN_TOPIC_ID]
        meta = topic_meta(raw, topic)
        mod = schema(1, 13)
        forgotten = (
            mod.ForgottenTopic(topic_id=uuid.uuid4(), partitions=(-1, INT32_MAX)),
            mod.ForgottenTopic(topic_id=meta.topic_id, partitions=(0,)),
        )
        body = _fetch_body(
            topic, [(0, 0, 1000)], version=13, topic_id=meta.topic_id,
            forgotten_topics_data=forgotten,
        )  # fmt: skip
        assert _fetch_codes(raw, body) == [NONE]
        assert_serving(raw)


# --------------------------------------------------------------------------- ListOffsets


def _list_offsets(
    raw: RawKafka, topic: str, entries: list[tuple[int, int]], version: int = 8
) -> list[tuple[int, int, int]]:
    """(error, offset, timestamp) per (partition, timestamp) entry."""
    mod = schema(2, version)
    resp = raw.request(
        request_class(2, version)(
            replica_id=-1,
            isolation_level=0,
            topics=(
                mod.ListOffsetsTopic(
                    name=topic,
                    partitions=tuple(
                        mod.ListOffsetsPartition(
                            partition_index=p, current_leader_epoch=-1, timestamp=ts
                        )
                        for p, ts in entries
                    ),
                ),
            ),
        )
    )
    return [(int(p.error_code), p.offset, p.timestamp) for t in resp.topics for p in t.partitions]


def test_list_offsets_partition_index_out_of_range(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        got = _list_offsets(raw, topic, [(-1, -1), (INT32_MAX, -2), (-(2**31), 0)])
        assert got == [(UNKNOWN_TOPIC_OR_PARTITION, -1, -1)] * 3
        assert_serving(raw)


def test_list_offsets_special_timestamps_by_version(server: Server) -> None:
    """Kafka answers UNSUPPORTED_VERSION for a negative timestamp that is no sentinel, or a
    sentinel newer than the request version (-3 needs v7, -4 v8, -5 v9)."""
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        now = int(time.time() * 1000)
        recs = [Rec(b"k", b"v", timestamp_delta=i) for i in range(3)]
        assert raw.produce(topic, 0, build_batch(recs, first_timestamp=now))[0] == NONE

        def one(ts: int, version: int = 8) -> tuple[int, int, int]:
            (got,) = _list_offsets(raw, topic, [(0, ts)], version)
            return got

        assert [one(ts) for ts in (-1, -2, -3, -4)] == [
            (NONE, 3, -1),
            (NONE, 0, -1),
            (NONE, 2, now + 2),
            (NONE, 0, -1),
        ]
        unsupported = (UNSUPPORTED_VERSION, -1, -1)
        assert one(-4, version=7) == unsupported
        assert [one(-3, version=6), one(-4, version=6)] == [unsupported] * 2
        assert [one(ts) for ts in (-5, -6, -100, INT64_MIN)] == [unsupported] * 4
        assert [one(INT64_MAX), one(now + 3)] == [(NONE, -1, -1)] * 2
        assert one(0) == (NONE, 0, now)
        assert_serving(raw)


def test_list_offsets_duplicate_partitions_are_invalid(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw, partitions=2)
        got = _list_offsets(raw, topic, [(0, -1), (1, -1), (0, -2)])
        assert got == [(INVALID_REQUEST, -1, -1), (NONE, 0, -1), (INVALID_REQUEST, -1, -1)]
        assert_serving(raw)


# --------------------------------------------------------------------------- DeleteRecords


def _delete_records(raw: RawKafka, topic: str, entries: list[tuple[int, int]]) -> list[Any]:
    mod = schema(21, 2)
    resp = raw.request(
        request_class(21, 2)(
            topics=(
                mod.DeleteRecordsTopic(
                    name=topic,
                    partitions=tuple(
                        mod.DeleteRecordsPartition(partition_index=p, offset=o) for p, o in entries
                    ),
                ),
            ),
            timeout=ms(5000),
        )
    )
    return [(int(p.error_code), p.low_watermark) for t in resp.topics for p in t.partitions]


def test_delete_records_offsets(server: Server) -> None:
    """-1 means the high watermark; any other negative offset, or one past the high
    watermark, is OFFSET_OUT_OF_RANGE (ReplicaManager.deleteRecordsOnLocalLog)."""
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        _produce(raw, topic, 5)
        bad = [(0, -2), (0, INT64_MIN), (0, 6), (0, INT64_MAX)]
        assert _delete_records(raw, topic, bad) == [(OFFSET_OUT_OF_RANGE, -1)] * 4
        unknown = [(-1, 0), (INT32_MAX, 0)]
        assert _delete_records(raw, topic, unknown) == [(UNKNOWN_TOPIC_OR_PARTITION, -1)] * 2
        assert _delete_records(raw, topic, [(0, 2)]) == [(NONE, 2)]
        # An offset below the log start leaves it where it is.
        assert _delete_records(raw, topic, [(0, 0)]) == [(NONE, 2)]
        assert _delete_records(raw, topic, [(0, -1)]) == [(NONE, 5)]
        assert raw.list_offset(topic, 0, -2).offset == 5
        assert_serving(raw)


# --------------------------------------------------------------------------- Metadata


def test_metadata_invalid_topic_names(server: Server) -> None:
    """Kafka validates a name it does not know: INVALID_TOPIC_EXCEPTION whether or not it
    may auto-create (KafkaApis.getTopicMetadata)."""
    bad = ["", ".", "..", "a" * 250, "x" * 32_767, "bad/name", "tab\tname", "ü"]
    with RawKafka(server.bootstrap) as raw:
        for auto_create in (False, True):
            resp = raw.metadata(bad, auto_create=auto_create)
            got = [(t.name, int(t.error_code), t.partitions) for t in resp.topics]
            assert got == [(n, INVALID_TOPIC_EXCEPTION, ()) for n in bad]
        assert_serving(raw)


def test_metadata_duplicate_and_unknown_topics(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        missing = unique_topic("missing")
        resp = raw.metadata([topic, missing, topic, missing])
        got = [(t.name, int(t.error_code)) for t in resp.topics]
        assert got == [(topic, NONE), (missing, UNKNOWN_TOPIC_OR_PARTITION)]
        mod = schema(3, 12)
        resp = raw.request(
            mod.MetadataRequest(
                topics=(mod.MetadataRequestTopic(topic_id=uuid.uuid4(), name=None),),
                allow_auto_topic_creation=True,
                include_topic_authorized_operations=False,
            )
        )
        assert [int(t.error_code) for t in resp.topics] == [UNKNOWN_TOPIC_ID]
        assert_serving(raw)
