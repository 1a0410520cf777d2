"""The service's end of an indexer worker's pipe, driven by the event loop.

The worker's end is a plain multiprocessing Connection, blocking, in its own process. This
end must never block the loop, and must never take a busy worker for a dead one. A
Connection cannot do that here: uvloop's add_reader makes the descriptor non-blocking
(libuv's uv_poll_init sets O_NONBLOCK), so Connection.send raised BlockingIOError as soon
as a worker busy committing fell a few hundred messages behind (a burst of topic deletes),
and Connection.recv could stop in the middle of a large progress report; either was taken
for a lost worker, which was killed and restarted. So this end is non-blocking on purpose,
whatever the loop, with its own buffers. The frames are Connection's (a 4-byte big-endian
length, or -1 and an 8-byte length, then a pickle), so the worker keeps using send/recv."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import struct
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("app.storage.index")

_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")
_LONG = -1
READ_CHUNK = 256 * 1024


class PipeLost(Exception):
    """The frames from the worker make no sense; nothing more can be read."""


class WorkerPipe:
    """Messages to a worker are queued and written as the socket takes them; messages from
    it are handed to `on_message` in order. Once the pipe fails or the worker closes its
    end, `closed` is set and `lost` says why."""

    def __init__(self, conn: Connection, on_message: Callable[[Any], None], name: str) -> None:
        self._sock = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()
        self._sock.setblocking(False)
        self._fd = self._sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message
        self._name = name
        self._in = bytearray()
        self._out = bytearray()
        self._writing = False
        self.closed = False
        self.lost: str | None = None
        self._loop.add_reader(self._fd, self._readable)

    def send(self, msg: Any) -> None:
        if self.closed:
            return
        body = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)
        if len(body) > 0x7FFFFFFF:
            self._out += _LENGTH.pack(_LONG) + _LONG_LENGTH.pack(len(body))
        else:
            self._out += _LENGTH.pack(len(body))
        self._out += body
        self._flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
        self._sock.close()

    def _lose(self, why: str) -> None:
        if not self.closed:
            self.lost = why
            self.close()

    def _flush(self) -> None:
        while self._out:
            try:
                sent = self._sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lose(f"writing to its pipe failed: {exc!r}")
                return
            del self._out[:sent]
        if bool(self._out) != self._writing:
            self._writing = not self._writing
            if self._writing:
                self._loop.add_writer(self._fd, self._flush)
            else:
                self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        try:
            data = self._sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(f"reading its pipe failed: {exc!r}")
            return
        if not data:
            self._lose("it closed its pipe")
            return
        self._in += data
        try:
            messages = self._take_messages()
        except (PipeLost, pickle.UnpicklingError) as exc:
            self._lose(f"it sent a bad frame: {exc!r}")
            return
        for msg in messages:
            try:
                self._on_message(msg)
            except Exception:
                log.exception("%s: handling its report failed", self._name)

    def _take_messages(self) -> list[Any]:
        buf, pos, out = self._in, 0, []
        while len(buf) - pos >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buf, pos)
            start = pos + _LENGTH.size
            if size == _LONG:
                if len(buf) - start < _LONG_LENGTH.size:
                    break
                (size,) = _LONG_LENGTH.unpack_from(buf, start)
                start += _LONG_LENGTH.size
            elif size < 0:
                raise PipeLost(f"frame length {size}")
            if len(buf) - start < size:
                break
            out.append(pickle.loads(buf[start : start + size]))
            pos = start + size
        del buf[:pos]
        return out
