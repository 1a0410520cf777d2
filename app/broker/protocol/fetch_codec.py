"""Hand-written Fetch response encoder (v4-v16).

Record batches are passed through by reference: the encoder returns a list of
buffers for transport.writelines(), so stored batch bytes are never copied
into a response buffer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from .wire import EMPTY_TAGS, I16, I32, I64, array_len, bytes_len, string, uuid_bytes

FETCH_FLEXIBLE_FROM = 12
FETCH_TOPIC_IDS_FROM = 13

Buffer = bytes | memoryview


@dataclass(slots=True)
class FetchPartitionResult:
    partition: int
    error_code: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    records: Sequence[Buffer] = field(default_factory=list)
    # (producer id, first offset); None for read_uncommitted, as Kafka sends null then.
    aborted: Sequence[tuple[int, int]] | None = None


@dataclass(slots=True)
class FetchTopicResult:
    name: str
    topic_id: uuid.UUID | None
    partitions: list[FetchPartitionResult]


def encode_fetch_response(
    version: int,
    correlation_id: int,
    topics: Sequence[FetchTopicResult],
    error_code: int = 0,
    session_id: int = 0,
) -> list[Buffer]:
    flexible = version >= FETCH_FLEXIBLE_FROM
    out: list[Buffer] = [b""]
    head = bytearray(I32.pack(correlation_id))
    if flexible:
        head += EMPTY_TAGS
    head += I32.pack(0)  # throttle_time_ms
    if version >= 7:
        head += I16.pack(error_code)
        head += I32.pack(session_id)
    head += array_len(len(topics), flexible)
    size = 0
    for t in topics:
        if version >= FETCH_TOPIC_IDS_FROM:
            head += uuid_bytes(t.topic_id)
        else:
            head += string(t.name, flexible)
        head += array_len(len(t.partitions), flexible)
        for p in t.partitions:
            head += I32.pack(p.partition)
            head += I16.pack(p.error_code)
            head += I64.pack(p.high_watermark)
            head += I64.pack(p.last_stable_offset)
            if version >= 5:
                head += I64.pack(p.log_start_offset)
            if p.aborted is None:
                head += b"\x00" if flexible else I32.pack(-1)
            else:
                head += array_len(len(p.aborted), flexible)
                for producer_id, first_offset in p.aborted:
                    head += I64.pack(producer_id)
                    head += I64.pack(first_offset)
                    if flexible:
                        head += EMPTY_TAGS
            if version >= 11:
                head += I32.pack(-1)  # preferred_read_replica
            n = 0
            for b in p.records:
                n += len(b)
            head += bytes_len(n, flexible)
            if n:
                out.append(bytes(head))
                size += len(head)
                out.extend(p.records)
                size += n
                head = bytearray()
            if flexible:
                head += EMPTY_TAGS
        if flexible:
            head += EMPTY_TAGS
    if flexible:
        head += EMPTY_TAGS
    out.append(bytes(head))
    size += len(head)
    out[0] = I32.pack(size)
    return out
