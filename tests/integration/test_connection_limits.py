"""The Kafka listener's resource limits against a real server: connections past
max_connections / max_connections_per_ip are closed at once while a producer opened before
keeps getting acks; partial, trickled and silent connections are closed after
connections_max_idle_ms; a client that sends requests and never reads the responses does not
grow the server's memory without bound."""

from __future__ import annotations

import contextlib
import resource
import socket
import time
from collections.abc import Iterator

import psutil
import pytest

from .conftest import Server, running_server
from .fuzzing import ControlClient, RssWatch, fetch_frame, probe, produce_frame
from .rawkafka import RawKafka, Rec, build_batch

MAX_CONNECTIONS = 200
PER_IP = 150
IDLE_MS = 1500
MiB = 1 << 20
INFLIGHT_PER_CONNECTION = 16 * MiB
INFLIGHT_TOTAL = 64 * MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        # the 2,000 idle connections below, in this process and the server's (which inherits it)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    flags = [
        "--max-connections", str(MAX_CONNECTIONS),
        "--max-connections-per-ip", str(PER_IP),
        "--connections-max-idle-ms", str(IDLE_MS),
        "--connection-max-inflight-bytes", str(INFLIGHT_PER_CONNECTION),
        "--max-inflight-bytes", str(INFLIGHT_TOTAL),
        # fetches read the WAL (a new buffer each) rather than share the memory tail's
        "--memtail-bytes", str(MiB),
    ]  # fmt: skip
    with running_server(tmp_path_factory.mktemp("chronik-limits"), flags) as srv:
        yield srv


def connect_from(source_ip: str, server: Server) -> socket.socket:
    """A connection from a chosen loopback address (any 127.x.y.z is this machine)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source_ip, 0))
    sock.settimeout(5)
    sock.connect(("127.0.0.1", server.kafka_port))
    return sock


def is_open(sock: socket.socket) -> bool:
    """Whether the server still holds the connection (no EOF or reset waiting on it)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def server_connections(server: Server) -> int:
    port = server.kafka_port
    conns = psutil.Process(server.pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_connections_past_the_caps_are_refused_and_a_producer_keeps_producing(
    server: Server,
) -> None:
    control = ControlClient(server.bootstrap).start()
    socks: dict[str, list[socket.socket]] = {"127.0.0.2": [], "127.0.0.3": []}
    try:
        time.sleep(0.5)
        acked = control.acked
        before = server_connections(server)  # the control client's own
        # 2,000 idle connections from two addresses
        for i in range(2000):
            ip = "127.0.0.2" if i % 2 == 0 else "127.0.0.3"
            with contextlib.suppress(OSError):  # a full accept queue may refuse one
                socks[ip].append(connect_from(ip, server))
        time.sleep(1.0)  # the server has accepted (and closed) them all
        open_by_ip = {ip: sum(is_open(s) for s in ss) for ip, ss in socks.items()}
        assert sum(len(ss) for ss in socks.values()) > 1900
        # each address is capped, and all together with the control client's are capped
        assert all(n <= PER_IP for n in open_by_ip.values()), open_by_ip
        assert open_by_ip["127.0.0.2"] + open_by_ip["127.0.0.3"] + before <= MAX_CONNECTIONS
        assert open_by_ip["127.0.0.2"] + open_by_ip["127.0.0.3"] >= MAX_CONNECTIONS - before - 2
        assert server_connections(server) <= MAX_CONNECTIONS
        # at the cap, a new connection is closed at once, from any address
        assert probe(server.bootstrap, b"", timeout=3) == "closed"
        # the producer opened before keeps getting acks, promptly
        deadline = time.monotonic() + 5
        while control.acked < acked + 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert control.acked >= acked + 50, (acked, control.acked)
        assert not control.errors, control.errors[:3]
        assert max(control.latencies[-50:]) < 2.0
    finally:
        for ss in socks.values():
            for s in ss:
                s.close()
        control.stop()
    assert not control.errors, control.errors[:3]
    assert control.acked - len(control.received) <= 0
    # closed connections give their place back
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), RawKafka(server.bootstrap, timeout=2) as raw:
            raw.api_versions()
            break
        time.sleep(0.1)
    else:
        raise AssertionError("no connection admitted after the idle ones closed")
    # a flood of refusals is a few throttled warnings, not a line each
    refusals = server.stderr_text(10**7).count("refusing Kafka connection")
    assert 1 <= refusals <= 5, refusals


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closes `sock` (reading and discarding), None if it does not."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - started


def test_partial_silent_and_trickling_connections_are_closed_after_the_idle_timeout(
    server: Server,
) -> None:
    whole = produce_frame("t", build_batch([Rec(b"k", b"v")]))
    partial = connect_from("127.0.0.4", server)
    partial.sendall(whole[: len(whole) // 2])  # the length prefix and half the request
    silent = connect_from("127.0.0.4", server)
    prefix_only = connect_from("127.0.0.4", server)
    prefix_only.sendall(whole[:4])
    trickle = connect_from("127.0.0.4", server)
    busy = RawKafka(server.bootstrap)
    started = time.monotonic()
    # one byte of a frame every 300 ms is never a complete request: that is idleness too
    sent = 0
    while time.monotonic() - started < IDLE_MS / 1000 + 1.5:
        with contextlib.suppress(OSError):
            trickle.sendall(whole[sent : sent + 1])
        sent += 1
        busy.api_versions()  # a connection with complete requests is not idle
        time.sleep(0.3)
    for sock in (partial, silent, prefix_only, trickle):
        left = IDLE_MS / 1000 + 2.5 - (time.monotonic() - started)
        assert closed_within(sock, max(left, 0.1)) is not None
        sock.close()
    elapsed = time.monotonic() - started
    assert elapsed >= IDLE_MS / 1000 - 0.2, elapsed
    # the busy one outlived them all
    busy.api_versions()
    busy.close()


def test_requests_whose_responses_are_never_read_do_not_grow_memory(server: Server) -> None:
    """Two clients pipeline fetches of 8 MB each and never read the answers: the server
    stops reading from them and running their requests once the bytes it holds for them
    reach the in-flight budgets, so its RSS stays bounded while other clients are served."""
    topic = "unread-" + str(int(time.time() * 1000))
    with RawKafka(server.bootstrap) as raw:
        raw.create_topic(topic)
        value = bytes(range(256)) * 3600  # 900 KB, under max.message.bytes
        for _ in range(9):
            assert raw.produce(topic, 0, build_batch([Rec(None, value)]))[0] == 0
    rss = RssWatch(server.pid)
    rss.start()
    hogs = [connect_from(f"127.0.0.{10 + i}", server) for i in range(2)]
    frames = b"".join(fetch_frame(topic, 64 * MiB, cid) for cid in range(200))
    try:
        for sock in hogs:
            sock.setblocking(False)
        deadline = time.monotonic() + 4
        pushed = [0] * len(hogs)  # bytes of requests the kernel took
        while time.monotonic() < deadline:
            for i, sock in enumerate(hogs):
                with contextlib.suppress(BlockingIOError):
                    pushed[i] += sock.send(frames[pushed[i] % len(frames) :])
            time.sleep(0.01)
        with RawKafka(server.bootstrap, timeout=5) as raw:
            raw.api_versions()  # others are served meanwhile
    finally:
        rss.stop_event.set()
        for sock in hogs:
            sock.close()
    # what the budgets allow, one fetch response of each connection over them, and slack
    grown = rss.peak_main - rss.base_main
    assert grown < INFLIGHT_TOTAL + 2 * 8 * MiB + 100 * MiB, (rss.base_main, rss.peak_main)
