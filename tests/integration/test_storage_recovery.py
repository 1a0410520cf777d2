"""Storage behaviour seen from outside: segment rolling, torn tails, concurrent writers,
and idempotence state that survives restarts."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from .clients import (
    Msg,
    consume_aiokafka,
    consume_confluent,
    diff,
    make_messages,
    produce_confluent,
    watermarks,
    with_offsets,
)
from .conftest import Server, unique_topic
from .rawkafka import RawKafka, Rec, build_batch, corrupt_crc, parse_batches

LATEST = -1


def _active_segment(data_dir: Path, marker: bytes) -> Path:
    """The newest `{base:020d}.log` WAL segment of the partition whose data contains marker."""
    holders = [p for p in data_dir.rglob("*.log") if marker in p.read_bytes()]
    assert holders, f"no *.log file under {data_dir} holds the produced bytes"
    directory = holders[0].parent
    segments = sorted(directory.glob("*.log"), key=lambda p: int(p.stem))
    return segments[-1]


def test_small_segments_roll_and_read_back(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server("--segment-bytes", "131072")
    topic = unique_topic("roll")
    expected: list[Msg] = []
    for codec in ("none", "lz4", "none", "gzip"):
        msgs = make_messages(
            300, seed=len(expected), base_ts=1_700_000_000_000 + len(expected) * 10
        )
        offsets = produce_confluent(
            srv.bootstrap, topic, msgs, codec, **{"batch.size": 16384, "linger.ms": 1}
        )
        expected += with_offsets(msgs, offsets)
    assert [m.offset for m in expected] == list(range(1200))
    got = consume_confluent(srv.bootstrap, topic, 1200)
    assert got == expected, diff(expected, got)
    got = consume_aiokafka(srv.bootstrap, topic, 1200 - 555, start=555)
    assert got == expected[555:], diff(expected[555:], got)

    marker = expected[7].value
    assert marker is not None
    directory = _active_segment(srv.data_dir, marker).parent
    assert len(list(directory.glob("*.log"))) >= 2, "segment.bytes=128KiB did not roll segments"

    srv.restart()
    assert watermarks(srv.bootstrap, topic) == (0, 1200)
    got = consume_confluent(srv.bootstrap, topic, 1200)
    assert got == expected, diff(expected, got)


def test_torn_tail_is_truncated_on_recovery(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server()
    topic = unique_topic("torn")
    marker = os.urandom(32).hex().encode()
    msgs = [Msg(b"k%d" % i, marker + b"-%d" % i, (), 1_700_000_000_000 + i) for i in range(50)]
    expected = with_offsets(msgs, produce_confluent(srv.bootstrap, topic, msgs, "none"))
    srv.kill()

    segment = _active_segment(srv.data_dir, marker)
    torn_batch = build_batch([Rec(b"torn", b"x" * 500)])
    with segment.open("ab") as f:
        # a complete batch with a broken CRC, then half of a batch: a torn write
        f.write(corrupt_crc(torn_batch))
        f.write(torn_batch[: len(torn_batch) // 2])

    srv.start()
    assert watermarks(srv.bootstrap, topic) == (0, 50)
    got = consume_confluent(srv.bootstrap, topic, 50)
    assert got == expected, diff(expected, got)
    with RawKafka(srv.bootstrap) as raw:
        p = raw.fetch(topic, 0, 0, max_wait_ms=0, max_bytes=10 << 20)
        batches = parse_batches(bytes(p.records))
        assert all(b.crc_ok for b in batches)
        assert sum(len(b.records) for b in batches) == 50
        # the log continues right after the last good batch
        assert raw.produce(topic, 0, build_batch([Rec(b"after", b"recovery")])) == (0, 50)
    srv.restart()
    assert watermarks(srv.bootstrap, topic) == (0, 51)


def test_concurrent_producers_share_a_partition(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server()
    topic = unique_topic("concurrent")
    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def run(w: int) -> None:
        msgs = [Msg(b"w%d" % w, b"w%d-%d" % (w, i), (), 1_700_000_000_000 + i) for i in range(500)]
        try:
            results[w] = produce_confluent(
                srv.bootstrap,
                topic,
                msgs,
                ("none", "zstd", "snappy", "gzip")[w],
                **{"linger.ms": 1},
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    all_offsets = sorted(o for offs in results.values() for o in offs)
    assert all_offsets == list(range(2000))
    got = consume_confluent(srv.bootstrap, topic, 2000)
    assert [m.offset for m in got] == list(range(2000))
    by_offset = {m.offset: m.value for m in got}
    for w, offs in results.items():
        # each writer's messages are stored in its own send order, at the acked offsets
        assert [by_offset[o] for o in offs] == [b"w%d-%d" % (w, i) for i in range(500)]
        assert offs == sorted(offs)


def _idempotent_batch(pid: int, epoch: int, seq: int, n: int, tag: bytes) -> bytes:
    return build_batch(
        [Rec(tag, tag + b"-%d" % i) for i in range(n)],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
    )


def test_duplicate_detected_after_restart_and_crash(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server()
    topic = unique_topic("idem-restart")
    with RawKafka(srv.bootstrap) as raw:
        raw.metadata([topic], auto_create=True)
        pid, epoch = raw.init_producer_id()
        b0 = _idempotent_batch(pid, epoch, 0, 4, b"a")
        b1 = _idempotent_batch(pid, epoch, 4, 3, b"b")
        assert raw.produce(topic, 0, b0) == (0, 0)
        assert raw.produce(topic, 0, b1) == (0, 4)

    srv.restart()
    with RawKafka(srv.bootstrap) as raw:
        # the last batch retried after a graceful restart is still a duplicate
        assert raw.produce(topic, 0, b1) == (0, 4)
        assert raw.list_offset(topic, 0, LATEST).offset == 7
        b2 = _idempotent_batch(pid, epoch, 7, 2, b"c")
        assert raw.produce(topic, 0, b2) == (0, 7)

    srv.kill()
    srv.start()
    with RawKafka(srv.bootstrap) as raw:
        # and after a crash: the producer state is rebuilt from the log
        assert raw.produce(topic, 0, b2) == (0, 7)
        assert raw.list_offset(topic, 0, LATEST).offset == 9
        b3 = _idempotent_batch(pid, epoch, 9, 1, b"d")
        assert raw.produce(topic, 0, b3) == (0, 9)
        assert raw.list_offset(topic, 0, LATEST).offset == 10
