"""Kafka listener: connections, the request pipeline and in-order responses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import deque
from typing import Any

from ..security import Security
from ..security.principal import ANONYMOUS
from ..security.tls import peer_principal
from . import metrics
from .broker import Broker
from .conn_limits import (
    IDLE_CLOSED,
    READ_PAUSES,
    REFUSED,
    ConnectionLimits,
    InflightBudget,
    ThrottledWarning,
    sweep_idle,
)
from .errors import UNEXPECTED_MESSAGE, UNKNOWN_SERVER_ERROR, UNSUPPORTED_VERSION, code_for
from .handlers.api_versions import unsupported_version_response
from .handlers.base import error_only_response
from .handlers.failure import failed_response, topics_named
from .protocol.codec import (
    API_VERSIONS_KEY,
    MalformedRequest,
    Request,
    UnknownApi,
    decode_request,
    peek_header,
)
from .protocol.framing import FrameDecoder, FrameTooLarge, InvalidFrame
from .session import MAX_RECEIVE_SIZE, SaslSession, Step
from .slots import MAX_IN_FLIGHT, MAX_RUNNING, Slot, frame_size, response_reserve

log = logging.getLogger(__name__)

PRODUCE_KEY = 0


class KafkaConnection(asyncio.Protocol):
    def __init__(self, server: KafkaServer) -> None:
        self.server = server
        self.broker = server.broker
        self.session = SaslSession(server.security, "") if server.sasl else None
        max_size = server.broker.settings.max_request_bytes
        if self.session is not None:
            max_size = min(max_size, MAX_RECEIVE_SIZE)
        self.decoder = FrameDecoder(max_size)
        self.pending: deque[Slot] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.client_host = ""
        self.address = ""
        # The principal of a connection without SASL: a client certificate's CN, if any.
        self.principal = ANONYMOUS
        self.inflight = 0  # bytes of requests read and not yet answered
        self.reserved = 0  # response bytes the running handlers may produce
        self.unsent = 0  # bytes of finished responses waiting for those before them
        self.running = 0
        self._deferred: deque[tuple[Slot, Request]] = deque()
        self._counted = 0  # what this connection holds of the server's budget
        self.last_active = time.monotonic()
        self._admitted = False
        self._closing = False
        self._read_paused = False
        self._write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        self.address = str(self.peer[0]) if self.peer else ""
        self.client_host = f"/{self.address}" if self.peer else ""
        server = self.server
        refused = server.limits.admit(self.address)
        if refused is not None:
            self._closing = True
            REFUSED.labels(refused).inc()
            server.refused_log.warning(
                "refusing Kafka connection from %s: %s",
                self.address,
                "max_connections reached"
                if refused == "total"
                else "max_connections_per_ip reached for this address",
            )
            transport.close()
            return
        self._admitted = True
        server.connections.add(self)
        if self.session is not None:
            self.session.address = self.address
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Fetch responses go out as a header plus batch buffers; with Nagle
            # on, the tail waits for the client's delayed ACK (~40 ms).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if server.certificate_principal:
            self.principal = peer_principal(transport.get_extra_info("ssl_object")) or ANONYMOUS

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._released()
        for task in self.tasks:
            task.cancel()

    def _released(self) -> None:
        """Give back what the connection counted against the server's limits (once)."""
        if not self._admitted:
            return
        self._admitted = False
        server = self.server
        server.limits.release(self.address)
        server.connections.discard(self)
        server.budget.forget(self)
        server.budget.change(-self._counted)
        self._counted = 0

    def _track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def close_idle(self) -> None:
        IDLE_CLOSED.inc()
        log.debug("closing idle connection from %s", self.peer)
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            frames = self.decoder.feed(data)
        except (FrameTooLarge, InvalidFrame) as exc:
            log.warning("closing connection from %s: %s", self.peer, exc)
            self._close_after_pending()
            return
        if frames:
            self.last_active = time.monotonic()
        for frame in frames:
            if self._closing:
                break
            self._dispatch(frame)
        self.account()
        self._regulate()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._regulate()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._regulate()

    def _held(self) -> int:
        """Bytes this connection holds: requests not yet answered, the partial frame being
        read, responses finished or not yet taken by the socket. (Not what running handlers
        may still produce: a consumer's long poll reserves its max_bytes and mostly returns
        little; counted in the budget, a dozen idle consumers would stop every producer.)"""
        held = self.inflight + self.decoder.buffered + self.unsent
        if self.transport is not None:
            held += self.transport.get_write_buffer_size()
        return held

    def account(self) -> None:
        """Bring the server's in-flight total up to date with this connection's bytes (the
        idle sweep calls it too: the socket drains without telling us)."""
        if not self._admitted:
            return
        held = self._held()
        delta = held - self._counted
        if delta:
            self._counted = held
            self.server.budget.change(delta)

    def _regulate(self) -> None:
        """Start the handlers that may start, then pause or resume reading."""
        if self.transport is None or self._closing:
            return
        self._start_deferred()
        server = self.server
        pause = self._write_paused or len(self.pending) >= MAX_IN_FLIGHT
        limit = ""
        # Only a connection with requests of its own in flight waits for them: a frame
        # larger than the limit is still read whole, then answered.
        held = self._held()
        if not pause and self.inflight and held >= server.connection_max_inflight:
            pause, limit = True, "connection"
        # Waiting for the total budget is safe for a connection whose requests will be
        # answered or that holds nothing; one in the middle of a frame finishes reading it.
        if not pause and server.budget.exhausted and (self.inflight or not self.decoder.buffered):
            pause, limit = True, "total"
            server.budget.wait(self, self._regulate)
        if pause and not self._read_paused:
            self.transport.pause_reading()
            self._read_paused = True
            if limit:
                READ_PAUSES.labels(limit).inc()
        elif not pause and self._read_paused:
            self.transport.resume_reading()
            self._read_paused = False

    def _dispatch(self, frame: bytes) -> None:
        size = len(frame) + 4
        session = self.session
        if session is not None and session.raw_tokens:
            self._answer(session.receive_token(frame), size)
            return
        try:
            api_key, version, correlation_id = peek_header(frame)
        except MalformedRequest:
            log.warning("closing connection from %s: unreadable request header", self.peer)
            self._close_after_pending()
            return
        if session is not None and session.needs(api_key):
            step = session.receive(frame, api_key, version)
            if not step.serve:
                self._answer(step, size)
                return
        broker = self.broker
        if not broker.supports(api_key, version):
            slot = Slot(size)
            slot.done = True
            if api_key == API_VERSIONS_KEY:
                slot.frame = unsupported_version_response(broker, correlation_id)
            else:
                slot.frame = error_only_response(
                    api_key, version, correlation_id, UNSUPPORTED_VERSION
                )
                slot.close_after = slot.frame is None
                log.warning(
                    "unsupported request api_key=%d version=%d from %s%s",
                    api_key,
                    version,
                    self.peer,
                    "; closing" if slot.close_after else "",
                )
            metrics.REQUESTS.labels(
                metrics.api_name(api_key), str(version), "UNSUPPORTED_VERSION"
            ).inc()
            self._queue(slot)
            self._flush()
            return
        try:
            req = decode_request(frame)
        except (UnknownApi, MalformedRequest) as exc:
            log.warning("closing connection from %s: %s", self.peer, exc)
            self._close_after_pending()
            return
        req.client_host = self.client_host
        req.client_address = self.address
        req.principal = session.principal if session is not None else self.principal
        slot = Slot(size)
        slot.reserve = response_reserve(req)
        self._queue(slot)
        self._deferred.append((slot, req))
        self._start_deferred()

    def _start_deferred(self) -> None:
        """Start waiting handlers, in order, while their responses have room: a client that
        pipelines requests and does not read the answers gets no more handlers run for it
        (Kafka mutes such a channel until its response is sent)."""
        deferred = self._deferred
        while deferred and not self._closing:
            slot, req = deferred[0]
            if self._write_paused:
                return
            if self.running:  # one at a time always runs, so every connection progresses
                if self.running >= MAX_RUNNING or self.server.budget.exhausted:
                    return
                if (
                    self._held() + self.reserved + slot.reserve
                    >= self.server.connection_max_inflight
                ):
                    return
            deferred.popleft()
            self.running += 1
            self.reserved += slot.reserve
            self._track(asyncio.get_running_loop().create_task(self._run(slot, req)))

    def _queue(self, slot: Slot) -> None:
        self.pending.append(slot)
        self.inflight += slot.size

    def _answer(self, step: Step, size: int) -> None:
        """Queue the session's answer to a frame: at once, after `step.delay` seconds, or
        once its password check has run in a thread."""
        slot = Slot(size)
        self._queue(slot)
        if step.check is None:
            self._settle(slot, step)  # now: a close stops the frames read with this one
            if step.delay <= 0:
                slot.done = True
                self._flush()
                return
        self._track(asyncio.get_running_loop().create_task(self._answer_later(slot, step)))

    async def _answer_later(self, slot: Slot, step: Step) -> None:
        if step.check is not None:
            assert step.then is not None
            try:
                outcome = await asyncio.to_thread(step.check)
            except asyncio.CancelledError:
                step.then(None)
                raise
            step = step.then(outcome)
            self._settle(slot, step)
        if step.delay > 0:
            await asyncio.sleep(step.delay)
        slot.done = True
        self._flush()

    def _settle(self, slot: Slot, step: Step) -> None:
        session = self.session
        assert session is not None
        # Bare SASL tokens (SaslHandshake v0) may be shorter than a request header; after
        # authentication frames are as large as any request may be.
        self.decoder.min_size = 0 if session.raw_tokens else 8
        if session.authenticated:
            self.decoder.max_size = self.broker.settings.max_request_bytes
        slot.frame = step.frame
        slot.close_after = step.close
        if step.close:
            self._closing = True

    async def _run(self, slot: Slot, req: Request) -> None:
        started = time.perf_counter()
        api = metrics.api_name(req.header.api_key)
        error = "none"
        try:
            slot.frame = await self.broker.handle(req)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = "failed"
            self._fail(slot, req, exc)
        metrics.REQUESTS.labels(api, str(req.header.api_version), error).inc()
        metrics.REQUEST_SECONDS.labels(api).observe(time.perf_counter() - started)
        self.running -= 1
        self.reserved -= slot.reserve
        slot.out = frame_size(slot.frame)
        self.unsent += slot.out
        slot.done = True
        self._flush()

    def _fail(self, slot: Slot, req: Request, exc: Exception) -> None:
        """Answer a request whose handler raised with its own error response, so the client
        gets an error code for it and the connection stays usable."""
        h = req.header
        code = code_for(exc)
        frame = None
        # acks=0 expects no response: Kafka closes the connection to signal the failure.
        if not (h.api_key == PRODUCE_KEY and int(getattr(req.body, "acks", -1)) == 0):
            message = UNEXPECTED_MESSAGE if code == UNKNOWN_SERVER_ERROR else str(exc)[:500]
            frame = failed_response(req, code, message)
        slot.frame = frame
        slot.close_after = frame is None
        log.error(
            "request %s v%d (topics %s) from %s failed with error code %d%s",
            metrics.api_name(h.api_key),
            h.api_version,
            ",".join(topics_named(req.body)) or "-",
            self.peer,
            code,
            "; closing the connection" if frame is None else "",
            exc_info=exc,
        )

    def _close_after_pending(self) -> None:
        slot = Slot()
        slot.done = True
        slot.close_after = True
        self.pending.append(slot)
        self._flush()
        self._closing = True

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        pending = self.pending
        while pending and pending[0].done:
            slot = pending.popleft()
            self.inflight -= slot.size
            self.unsent -= slot.out
            frame = slot.frame
            if frame is not None and not transport.is_closing():
                if isinstance(frame, bytes):
                    transport.write(frame)
                else:
                    transport.writelines(frame)
            if slot.close_after:
                self._closing = True
                pending.clear()
                self._deferred.clear()
                self.inflight = self.reserved = self.unsent = 0
                self.account()
                transport.close()
                return
        if not pending:
            # Idle time counts from the last answer too: a long poll is not idleness.
            self.last_active = time.monotonic()
        self.account()
        self._regulate()


class KafkaServer:
    def __init__(
        self, broker: Broker, security: Security, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.broker = broker
        self.security = security
        cfg = security.settings
        limits = security.limits
        self.sasl = cfg.sasl_enabled
        # The listener speaks TLS when the service gives it a context (SSL, SASL_SSL).
        self.ssl_context = ssl_context
        # SSL's principal is the client certificate's; SASL_SSL's is the SASL identity.
        self.certificate_principal = ssl_context is not None and not self.sasl
        self.limits = ConnectionLimits(limits.max_connections, limits.max_connections_per_ip)
        self.budget = InflightBudget(limits.max_inflight_bytes)
        self.connection_max_inflight = limits.connection_max_inflight_bytes
        self.idle_s = limits.connections_max_idle_ms / 1000
        self.handshake_timeout = max(1.0, min(60.0, self.idle_s))
        self.refused_log = ThrottledWarning(log)
        self.connections: set[KafkaConnection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            tls = {"ssl": self.ssl_context, "ssl_handshake_timeout": self.handshake_timeout}
        self._server = await loop.create_server(
            lambda: KafkaConnection(self), host, port, reuse_address=True, backlog=1024, **tls
        )
        self._sweeper = loop.create_task(sweep_idle(self.connections, self.idle_s))
        protocol = self.security.settings.kafka_security_protocol
        log.info("Kafka listener on %s:%d (%s)", host, port, protocol)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, let in-flight requests finish, then close connections.

        Produce requests finish within an fsync; what is still running after
        the grace period is a fetch long-poll, which is cancelled (its client
        reconnects and fetches again).
        """
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        tasks = [t for c in self.connections for t in c.tasks]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        # A client that does not read its responses would hold the close forever.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(
            c.transport is not None and c.transport.get_write_buffer_size()
            for c in self.connections
        ):
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
