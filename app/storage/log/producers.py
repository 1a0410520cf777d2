"""Idempotent-producer state of one partition: per producer id, its epoch and the last few
batches' sequence ranges and offsets. Everything here can be rebuilt from batch headers, so
a snapshot only saves replaying the whole log on startup."""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from app.storage.errors import DuplicateSequence, InvalidProducerEpoch, OutOfOrderSequence
from app.storage.log.batch import LOG_APPEND_TIME, BatchHeader, increment_sequence

log = logging.getLogger(__name__)

# Kafka keeps this many batches per producer for duplicate detection; the producer never has
# more than max.in.flight.requests.per.connection (<= 5) in flight.
CACHED_BATCHES = 5
SNAPSHOT_VERSION = 1


class BatchMetadata(NamedTuple):
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int
    append_time_ms: int


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=CACHED_BATCHES))

    @property
    def last_seq(self) -> int | None:
        return self.batches[-1].last_seq if self.batches else None


class ProducerState:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProducerState) and self.producers == other.producers

    def check(self, headers: Iterable[BatchHeader]) -> None:
        """Raise if appending these batches (in this order, as one unit) would break a
        producer's sequence; DuplicateSequence when the first of them is a retry."""
        staged: dict[int, tuple[int, int]] = {}
        for h in headers:
            if not h.is_idempotent:
                continue
            pid, epoch = h.producer_id, h.producer_epoch
            first, last = h.base_sequence, h.last_sequence
            entry = self.producers.get(pid)
            if pid in staged:
                current_epoch, last_seq = staged[pid]
                cached: Iterable[BatchMetadata] = ()
            elif entry is not None:
                current_epoch, last_seq = entry.epoch, entry.last_seq  # type: ignore[assignment]
                cached = entry.batches
            else:
                if first != 0:
                    raise OutOfOrderSequence(
                        f"producer {pid} is unknown here, so its first sequence must be 0, "
                        f"not {first}"
                    )
                staged[pid] = (epoch, last)
                continue
            if epoch < current_epoch:
                raise InvalidProducerEpoch(
                    f"producer {pid} epoch {epoch} is older than current epoch {current_epoch}"
                )
            if epoch > current_epoch:
                if first != 0:
                    raise OutOfOrderSequence(
                        f"producer {pid} new epoch {epoch} must start at sequence 0, not {first}"
                    )
            else:
                for b in cached:
                    if b.first_seq == first and b.last_seq == last:
                        raise DuplicateSequence(b.base_offset, b.last_offset, b.append_time_ms)
                expected = 0 if last_seq is None else increment_sequence(last_seq, 1)
                if first != expected:
                    raise OutOfOrderSequence(
                        f"producer {pid} epoch {epoch}: expected sequence {expected}, got {first}"
                    )
            staged[pid] = (epoch, last)

    def update(
        self,
        producer_id: int,
        epoch: int,
        first_seq: int,
        last_seq: int,
        base_offset: int,
        last_offset: int,
        append_time_ms: int,
    ) -> None:
        entry = self.producers.get(producer_id)
        if entry is None or entry.epoch != epoch:
            entry = self.producers[producer_id] = ProducerEntry(epoch)
        entry.batches.append(
            BatchMetadata(first_seq, last_seq, base_offset, last_offset, append_time_ms)
        )

    def replay(self, h: BatchHeader) -> None:
        """Apply a stored batch header (offsets already assigned)."""
        if not h.is_idempotent:
            return
        append_time = h.max_timestamp if h.timestamp_type == LOG_APPEND_TIME else -1
        self.update(
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.last_sequence,
            h.base_offset,
            h.last_offset,
            append_time,
        )

    def to_snapshot(self, offset: int) -> bytes:
        """Serialise the state as valid for every batch below `offset`."""
        producers = [
            [pid, e.epoch, [list(b) for b in e.batches]] for pid, e in self.producers.items()
        ]
        doc = {"version": SNAPSHOT_VERSION, "offset": offset, "producers": producers}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_snapshot(cls, data: bytes) -> tuple[ProducerState, int] | None:
        """(state, offset it is valid up to), or None if the snapshot is unusable."""
        try:
            doc = json.loads(data)
            if doc.get("version") != SNAPSHOT_VERSION:
                return None
            state = cls()
            for pid, epoch, batches in doc["producers"]:
                entry = state.producers[int(pid)] = ProducerEntry(int(epoch))
                for b in batches:
                    entry.batches.append(BatchMetadata(*(int(x) for x in b)))
            return state, int(doc["offset"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring unreadable producer snapshot: %s", exc)
            return None
