"""Limits of the Kafka listener: connections in total and per address, request bytes in
flight (Kafka's queued.max.request.bytes), idle connections, and the metrics and warnings
they produce. The connection code (`server.py`) applies them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Protocol

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge(
    "chronik_kafka_connections", "Open Kafka connections (counted once the TLS handshake is done)"
)
REFUSED = Counter(
    "chronik_kafka_connections_refused",
    "Kafka connections closed at accept: past max_connections (reason total) or "
    "max_connections_per_ip (reason per_ip)",
    ["reason"],
)
IDLE_CLOSED = Counter(
    "chronik_kafka_connections_idle_closed",
    "Kafka connections closed after connections_max_idle_ms without a complete request and "
    "with nothing in flight (slow or partial frames and unauthenticated connections included)",
)
READ_PAUSES = Counter(
    "chronik_kafka_read_pauses",
    "Times a Kafka connection stopped being read because of request bytes in flight: its own "
    "(limit connection, connection_max_inflight_bytes) or all connections' (limit total, "
    "max_inflight_bytes)",
    ["limit"],
)
INFLIGHT_BYTES = Gauge(
    "chronik_kafka_inflight_bytes",
    "Request bytes read and not yet answered over all Kafka connections, partial frames included",
)


class ThrottledWarning:
    """A WARNING at most once per `interval` seconds, saying how many were held back: a
    flood of refused connections must not become a flood of log lines."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._next = 0.0
        self._held = 0

    def warning(self, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self._held += 1
            return
        if self._held:
            message += f" ({self._held} more like it in the last {self._interval:.0f} s)"
        self._log.warning(message, *args)
        self._held = 0
        self._next = now + self._interval


class ConnectionLimits:
    """Open connections in total and per client address."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def admit(self, ip: str) -> str | None:
        """Count a new connection; None when admitted, else why not ("total", "per_ip")."""
        if self.total >= self.max_total:
            return "total"
        n = self.per_ip.get(ip, 0)
        if n >= self.max_per_ip:
            return "per_ip"
        self.per_ip[ip] = n + 1
        self.total += 1
        CONNECTIONS.set(self.total)
        return None

    def release(self, ip: str) -> None:
        n = self.per_ip.get(ip, 0) - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            self.per_ip.pop(ip, None)
        self.total -= 1
        CONNECTIONS.set(self.total)


class InflightBudget:
    """Request bytes held by all connections against one limit.

    A connection that must wait for the budget registers a callback; the callbacks run
    when the bytes in use fall below the limit again.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: dict[object, Callable[[], None]] = {}
        INFLIGHT_BYTES.set_function(lambda: self.used)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    def change(self, delta: int) -> None:
        self.used += delta
        if delta < 0 and self._waiting and self.used < self.limit:
            waiting, self._waiting = self._waiting, {}
            for resume in waiting.values():
                resume()

    def wait(self, key: object, resume: Callable[[], None]) -> None:
        self._waiting[key] = resume

    def forget(self, key: object) -> None:
        self._waiting.pop(key, None)


class _Sweepable(Protocol):
    @property
    def last_active(self) -> float: ...

    @property
    def pending(self) -> Collection[object]: ...

    def account(self) -> None: ...

    def close_idle(self) -> None: ...


async def sweep_idle(connections: Collection[_Sweepable], idle_s: float) -> None:
    """Close connections without a complete request for connections_max_idle_ms and nothing
    in flight (idle clients, slow or partial frames, stalled authentications); re-count the
    bytes of all, since a socket's write buffer drains without telling anyone."""
    interval = min(1.0, max(0.05, idle_s / 10))
    while True:
        await asyncio.sleep(interval)
        deadline = time.monotonic() - idle_s
        for conn in list(connections):
            conn.account()
            if conn.last_active < deadline and not conn.pending:
                conn.close_idle()
