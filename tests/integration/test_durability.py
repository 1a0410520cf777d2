"""Acknowledged means durable: across SIGTERM restarts and SIGKILL crashes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from .clients import (
    Msg,
    consume_confluent,
    consume_kafka_python,
    diff,
    make_messages,
    produce_confluent,
    watermarks,
    with_offsets,
)
from .conftest import Server, unique_topic
from .rawkafka import RawKafka


def test_sigterm_exits_cleanly(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server()
    t0 = time.monotonic()
    assert srv.stop() == 0, srv.stderr_text()
    assert time.monotonic() - t0 < 10


def test_restart_between_produce_and_consume(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server()
    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    topic = unique_topic("restart")
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(15)

    expected: dict[int, list[Msg]] = {}
    for p, codec in ((0, "none"), (1, "zstd")):
        msgs = make_messages(500, seed=p)
        expected[p] = with_offsets(msgs, produce_confluent(srv.bootstrap, topic, msgs, codec, p))
    before = srv.topics()[topic]
    assert before == {0: (0, 500), 1: (0, 500)}

    assert srv.stop() == 0
    srv.start()

    assert srv.topics()[topic] == before
    for p in (0, 1):
        got = consume_confluent(srv.bootstrap, topic, 500, partition=p)
        assert got == expected[p], diff(expected[p], got)

    # the log continues where it stopped, on both sides of a second restart
    more = make_messages(10, seed=7)
    assert produce_confluent(srv.bootstrap, topic, more, "gzip", 0) == list(range(500, 510))
    srv.restart()
    got = consume_kafka_python(srv.bootstrap, topic, 510, partition=0)
    assert got == expected[0] + with_offsets(more, range(500, 510))


def test_restart_keeps_empty_and_idle_topics(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server()
    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    topic = unique_topic("idle")
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(15)
    srv.restart()
    assert srv.topics()[topic] == {0: (0, 0), 1: (0, 0), 2: (0, 0)}
    md = admin.list_topics(topic=topic, timeout=10)
    assert sorted(md.topics[topic].partitions) == [0, 1, 2]


def _produce_until_killed(
    srv: Server, topic: str, acked: dict[int, bytes], failed: list[str], stop: threading.Event
) -> None:
    p = confluent_kafka.Producer(
        {
            "bootstrap.servers": srv.bootstrap,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 4000,
            "socket.timeout.ms": 2000,
            "reconnect.backoff.max.ms": 500,
        }
    )

    def on_delivery(err, msg) -> None:
        if err is None:
            off = msg.offset()
            if off in acked:
                failed.append(f"offset {off} acknowledged twice")
            acked[off] = msg.value()
        else:
            failed.append(str(err))

    i = 0
    while not stop.is_set():
        try:
            p.produce(topic, value=f"msg-{i:08d}".encode(), partition=0, on_delivery=on_delivery)
            i += 1
        except BufferError:
            p.poll(0.05)
            continue
        if i % 100 == 0:
            p.poll(0)
            time.sleep(0.002)
    p.flush(15)


def test_sigkill_loses_nothing_acknowledged(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server("--fsync", "always")
    topic = unique_topic("kill")
    with RawKafka(srv.bootstrap) as raw:
        raw.metadata([topic], auto_create=True)

    acked: dict[int, bytes] = {}
    failed: list[str] = []
    stop = threading.Event()
    t = threading.Thread(target=_produce_until_killed, args=(srv, topic, acked, failed, stop))
    t.start()
    try:
        time.sleep(1.0)
        acked_before_kill = len(acked)
        srv.kill()
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert not [f for f in failed if "twice" in f], failed[:5]
    assert acked_before_kill > 0, "nothing was acknowledged in the first second"

    srv.start()
    low, high = watermarks(srv.bootstrap, topic)
    assert low == 0
    assert high >= len(acked), f"log end {high} < {len(acked)} acknowledged messages"

    got = consume_confluent(srv.bootstrap, topic, high, timeout=60)
    offsets = [m.offset for m in got]
    assert offsets == list(range(high)), "offsets after recovery are not 0..end-1 exactly once"
    stored = {m.offset: m.value for m in got}
    missing = {o: v for o, v in acked.items() if stored.get(o) != v}
    assert not missing, (
        f"{len(missing)} of {len(acked)} acknowledged messages lost or changed, e.g. "
        f"{sorted(missing.items())[:5]}"
    )

    # the recovered log accepts new writes right after its end
    extra = make_messages(5, seed=3)
    assert produce_confluent(srv.bootstrap, topic, extra, "none") == list(range(high, high + 5))


def test_sigkill_after_idle_recovers_everything(fresh_server: Callable[..., Server]) -> None:
    """Killed while idle: every acknowledged record of every codec is recovered exactly."""
    srv = fresh_server()
    topic = unique_topic("idlekill")
    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    expected: list[Msg] = []
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        msgs = make_messages(100, seed=len(expected))
        offsets = produce_confluent(srv.bootstrap, topic, msgs, codec)
        expected += with_offsets(msgs, offsets)
    assert [m.offset for m in expected] == list(range(500))
    srv.kill()
    srv.start()
    assert srv.topics()[topic] == {0: (0, 500)}
    got = consume_confluent(srv.bootstrap, topic, 500)
    assert got == expected, diff(expected, got)
