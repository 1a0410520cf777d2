"""Length-prefixed Kafka frames: bytes in, complete request frames out (sans-I/O)."""

from __future__ import annotations

import struct

_SIZE = struct.Struct(">i")


class FrameTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"request of {size} bytes exceeds the {limit} byte limit")
        self.size = size
        self.limit = limit


class InvalidFrame(Exception):
    pass


class FrameDecoder:
    """Accumulates received bytes and splits them into request frames.

    A frame is rejected as soon as its length prefix is read, so an oversized
    or negative length never makes us buffer the announced payload.
    """

    __slots__ = ("_buf", "_need", "max_size", "min_size")

    def __init__(self, max_size: int, min_size: int = 8) -> None:
        self.max_size = max_size
        # A Kafka request has at least its 8-byte header; the bare SASL tokens of
        # SaslHandshake v0 framing may be shorter, down to empty.
        self.min_size = min_size
        self._buf = bytearray()
        self._need = -1

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while True:
            if self._need < 0:
                if end - pos < 4:
                    break
                (size,) = _SIZE.unpack_from(buf, pos)
                if size < self.min_size:
                    raise InvalidFrame(f"invalid request length {size}")
                if size > self.max_size:
                    raise FrameTooLarge(size, self.max_size)
                self._need = size
                pos += 4
            if end - pos < self._need:
                break
            frames.append(bytes(buf[pos : pos + self._need]))
            pos += self._need
            self._need = -1
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)
