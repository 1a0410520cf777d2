"""Kafka listener: connections, the request pipeline and in-order responses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from typing import Any

from . import metrics
from .broker import Broker
from .context import Frame
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

log = logging.getLogger(__name__)

PRODUCE_KEY = 0

# In-flight requests per connection before we stop reading from it.
MAX_IN_FLIGHT = 256


class _Slot:
    """One request's place in the response order."""

    __slots__ = ("close_after", "done", "frame")

    def __init__(self) -> None:
        self.done = False
        self.frame: Frame = None
        self.close_after = False


class KafkaConnection(asyncio.Protocol):
    def __init__(self, server: KafkaServer) -> None:
        self.server = server
        self.broker = server.broker
        self.decoder = FrameDecoder(server.broker.settings.max_request_bytes)
        self.pending: deque[_Slot] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.client_host = ""
        self._closing = False
        self._read_paused = False
        self._write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        self.client_host = f"/{self.peer[0]}" if self.peer else ""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Fetch responses go out as a header plus batch buffers; with Nagle
            # on, the tail waits for the client's delayed ACK (~40 ms).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.server.connections.discard(self)
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as exc:
            log.warning("closing connection from %s: %s", self.peer, exc)
            self._close_after_pending()
            return
        except InvalidFrame as exc:
            log.warning("closing connection from %s: %s", self.peer, exc)
            self._close_after_pending()
            return
        for frame in frames:
            if self._closing:
                return
            self._dispatch(frame)
        self._update_reading()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        if self.transport is None or self._closing:
            return
        want_pause = self._write_paused or len(self.pending) >= MAX_IN_FLIGHT
        if want_pause and not self._read_paused:
            self.transport.pause_reading()
            self._read_paused = True
        elif not want_pause and self._read_paused:
            self.transport.resume_reading()
            self._read_paused = False

    def _dispatch(self, frame: bytes) -> None:
        try:
            api_key, version, correlation_id = peek_header(frame)
        except MalformedRequest:
            log.warning("closing connection from %s: unreadable request header", self.peer)
            self._close_after_pending()
            return
        broker = self.broker
        if not broker.supports(api_key, version):
            slot = _Slot()
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
            self.pending.append(slot)
            self._flush()
            return
        try:
            req = decode_request(frame)
        except (UnknownApi, MalformedRequest) as exc:
            log.warning("closing connection from %s: %s", self.peer, exc)
            self._close_after_pending()
            return
        req.client_host = self.client_host
        slot = _Slot()
        self.pending.append(slot)
        task = asyncio.get_running_loop().create_task(self._run(slot, req))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, slot: _Slot, req: Request) -> None:
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
        slot.done = True
        self._flush()

    def _fail(self, slot: _Slot, req: Request, exc: Exception) -> None:
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
        slot = _Slot()
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
            frame = slot.frame
            if frame is not None and not transport.is_closing():
                if isinstance(frame, bytes):
                    transport.write(frame)
                else:
                    transport.writelines(frame)
            if slot.close_after:
                self._closing = True
                pending.clear()
                transport.close()
                return
        self._update_reading()


class KafkaServer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.connections: set[KafkaConnection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: KafkaConnection(self), host, port, reuse_address=True, backlog=1024
        )
        log.info("Kafka listener on %s:%d", host, port)

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
        if self._server is not None:
            await self._server.wait_closed()
