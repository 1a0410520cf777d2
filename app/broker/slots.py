"""A request's place in a connection's pipeline (`Slot`) and what it holds of the
connection's and the server's bytes in flight."""

from __future__ import annotations

from .context import Frame
from .handlers.fetch import FETCH_MAX_BYTES
from .protocol.codec import Request

FETCH_KEY = 1

# In-flight requests per connection before we stop reading from it.
MAX_IN_FLIGHT = 256
# Handlers running at once per connection; the rest wait, decoded, in order. Kafka runs one
# at a time; a few let one producer's requests share an fsync.
MAX_RUNNING = 16


class Slot:
    """One request's place in the response order; `size` is what it holds of the
    connection's and the server's in-flight bytes until it is answered."""

    __slots__ = ("close_after", "done", "frame", "out", "reserve", "size")

    def __init__(self, size: int = 0) -> None:
        self.done = False
        self.frame: Frame = None
        self.close_after = False
        self.size = size
        self.reserve = 0  # bytes its response may take, held while the handler runs
        self.out = 0  # bytes of its response, held until written


def frame_size(frame: Frame) -> int:
    if frame is None:
        return 0
    if isinstance(frame, bytes):
        return len(frame)
    return sum(len(b) for b in frame)


def response_reserve(req: Request) -> int:
    """What a response may take before it exists: a Fetch's max_bytes (capped as Kafka's
    fetch.max.bytes); other responses are small."""
    if req.header.api_key != FETCH_KEY:
        return 0
    body = req.body
    wanted = getattr(body, "max_bytes", None)
    if wanted is None:
        wanted = sum(int(p.partition_max_bytes) for t in body.topics for p in t.partitions)
    return max(0, min(int(wanted), FETCH_MAX_BYTES))
