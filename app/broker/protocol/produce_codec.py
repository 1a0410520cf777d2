"""Hand-written Produce response encoder (v3-v11), checked against kio in tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from .wire import EMPTY_TAGS, I16, I32, I64, array_len, nullable_string, string

PRODUCE_FLEXIBLE_FROM = 9


@dataclass(slots=True)
class PartitionResult:
    partition: int
    error_code: int = 0
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    # (index of the record in its batch, why it was refused): KIP-467, v8+.
    record_errors: list[tuple[int, str]] = field(default_factory=list)


def encode_produce_response(
    version: int, correlation_id: int, topics: list[tuple[str, list[PartitionResult]]]
) -> bytes:
    flexible = version >= PRODUCE_FLEXIBLE_FROM
    parts: list[bytes] = [b"", I32.pack(correlation_id)]
    if flexible:
        parts.append(EMPTY_TAGS)
    parts.append(array_len(len(topics), flexible))
    for name, results in topics:
        parts.append(string(name, flexible))
        parts.append(array_len(len(results), flexible))
        for r in results:
            parts.append(I32.pack(r.partition))
            parts.append(I16.pack(r.error_code))
            parts.append(I64.pack(r.base_offset))
            parts.append(I64.pack(r.log_append_time_ms))
            if version >= 5:
                parts.append(I64.pack(r.log_start_offset))
            if version >= 8:
                parts.append(array_len(len(r.record_errors), flexible))
                for index, message in r.record_errors:
                    parts.append(I32.pack(index))
                    parts.append(nullable_string(message, flexible))
                    if flexible:
                        parts.append(EMPTY_TAGS)
                parts.append(nullable_string(r.error_message, flexible))
            if flexible:
                parts.append(EMPTY_TAGS)
        if flexible:
            parts.append(EMPTY_TAGS)
    parts.append(I32.pack(0))  # throttle_time_ms
    if flexible:
        parts.append(EMPTY_TAGS)
    size = sum(len(p) for p in parts)
    parts[0] = I32.pack(size)
    return b"".join(parts)
