"""Idempotent and transactional producer state of one partition: per producer id, its epoch
and the last few batches' sequence ranges and offsets, and where its open transaction
starts. Everything here can be rebuilt from the batches, so a snapshot only saves replaying
the whole log on startup."""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from app.storage.errors import (
    DuplicateSequence,
    InvalidProducerEpoch,
    InvalidTxnState,
    OutOfOrderSequence,
)
from app.storage.log.batch import LOG_APPEND_TIME, BatchHeader, increment_sequence
from app.storage.log.txn import ABORT, AbortedIndex, AbortedTxn, control_type

if TYPE_CHECKING:
    from app.storage.log.wal import Wal

log = logging.getLogger(__name__)

# Kafka keeps this many batches per producer for duplicate detection; the producer never has
# more than max.in.flight.requests.per.connection (<= 5) in flight.
CACHED_BATCHES = 5
SNAPSHOT_VERSION = 2
# Version 1 had no open transactions: no transactional batch could be written then.
_READABLE_VERSIONS = (1, 2)


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
        # Producer id -> first offset of its open transaction here, oldest first.
        self.ongoing: dict[int, int] = {}

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ProducerState)
            and self.producers == other.producers
            and self.ongoing == other.ongoing
        )

    def first_unstable_offset(self) -> int | None:
        """Where the oldest open transaction starts: the last stable offset's bound."""
        return next(iter(self.ongoing.values()), None)

    def check_marker(self, producer_id: int, epoch: int) -> None:
        entry = self.producers.get(producer_id)
        if entry is not None and epoch < entry.epoch:
            raise InvalidProducerEpoch(
                f"marker epoch {epoch} of producer {producer_id} is older than current "
                f"epoch {entry.epoch}"
            )

    def end_txn(self, producer_id: int, epoch: int, offset: int, kind: int) -> AbortedTxn | None:
        """Apply an end-transaction marker stored at `offset`; the aborted transaction it
        closes, if it aborted one that wrote here. A higher epoch (a fenced or timed-out
        producer) resets the sequences, as Kafka's appendEndTxnMarker does."""
        entry = self.producers.get(producer_id)
        if entry is None or entry.epoch != epoch:
            self.producers[producer_id] = ProducerEntry(epoch)
        first = self.ongoing.pop(producer_id, None)
        if kind == ABORT and first is not None:
            return AbortedTxn(producer_id, first, offset)
        return None

    def check(self, headers: Iterable[BatchHeader]) -> None:
        """Raise if appending these batches (in this order, as one unit) would break a
        producer's sequence; DuplicateSequence when the first of them is a retry."""
        staged: dict[int, tuple[int, int]] = {}
        for h in headers:
            if not h.is_idempotent:
                continue
            pid, epoch = h.producer_id, h.producer_epoch
            first, last = h.base_sequence, h.last_sequence
            if not h.is_transactional and pid in self.ongoing:
                raise InvalidTxnState(
                    f"producer {pid} wrote a non-transactional batch while its transaction is open"
                )
            entry = self.producers.get(pid)
            if pid in staged:
                current_epoch, last_seq = staged[pid]
                cached: Iterable[BatchMetadata] = ()
            elif entry is not None:
                current_epoch, last_seq = entry.epoch, entry.last_seq  # type: ignore[assignment]
                cached = entry.batches
            else:
                # Any sequence is accepted from a producer with no state here (its batches
                # were all deleted, or never written), as Kafka does since KIP-360: the
                # producer keeps going instead of failing with UNKNOWN_PRODUCER_ID.
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
        transactional: bool = False,
    ) -> None:
        entry = self.producers.get(producer_id)
        if entry is None or entry.epoch != epoch:
            entry = self.producers[producer_id] = ProducerEntry(epoch)
        entry.batches.append(
            BatchMetadata(first_seq, last_seq, base_offset, last_offset, append_time_ms)
        )
        if transactional and producer_id not in self.ongoing:
            self.ongoing[producer_id] = base_offset

    def replay(self, h: BatchHeader, control_kind: int = -1) -> AbortedTxn | None:
        """Apply a stored batch (offsets already assigned); `control_kind` is a control
        batch's marker type. Returns the aborted transaction an ABORT marker closes."""
        if h.is_control:
            if h.producer_id < 0 or control_kind < 0:
                return None
            return self.end_txn(h.producer_id, h.producer_epoch, h.base_offset, control_kind)
        if not h.is_idempotent:
            return None
        append_time = h.max_timestamp if h.timestamp_type == LOG_APPEND_TIME else -1
        self.update(
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.last_sequence,
            h.base_offset,
            h.last_offset,
            append_time,
            h.is_transactional,
        )
        return None

    def to_snapshot(self, offset: int) -> bytes:
        """Serialise the state as valid for every batch below `offset`."""
        producers = [
            [pid, e.epoch, [list(b) for b in e.batches]] for pid, e in self.producers.items()
        ]
        doc = {
            "version": SNAPSHOT_VERSION,
            "offset": offset,
            "producers": producers,
            "ongoing": [[pid, first] for pid, first in self.ongoing.items()],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_snapshot(cls, data: bytes) -> tuple[ProducerState, int] | None:
        """(state, offset it is valid up to), or None if the snapshot is unusable."""
        try:
            doc = json.loads(data)
            if doc.get("version") not in _READABLE_VERSIONS:
                return None
            state = cls()
            for pid, epoch, batches in doc["producers"]:
                entry = state.producers[int(pid)] = ProducerEntry(int(epoch))
                for b in batches:
                    entry.batches.append(BatchMetadata(*(int(x) for x in b)))
            for pid, first in doc.get("ongoing", ()):
                state.ongoing[int(pid)] = int(first)
            return state, int(doc["offset"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring unreadable producer snapshot: %s", exc)
            return None


def recover_producers(snapshot: Path, wal: Wal, aborted: AbortedIndex) -> ProducerState:
    """Load the last snapshot and replay the batches written after it (without a usable
    snapshot, every WAL segment), rebuilding open transactions and the aborted index too."""
    loaded = None
    if snapshot.exists():
        loaded = ProducerState.from_snapshot(snapshot.read_bytes())
    if loaded is not None and loaded[1] <= wal.next_offset:
        state, since = loaded
    else:
        state, since = ProducerState(), -1
    # Aborted transactions below the replayed range (in tiered offsets too) only live in the
    # index file; those inside it are found again from their markers.
    aborted.load(max(since, wal.segments[0].base_offset), wal.next_offset)
    for seg in wal.segments:
        if seg.next_offset <= since:
            continue
        start = seg.offset_index.lookup(since - seg.base_offset) if since > seg.base_offset else 0
        for pos, h in seg.iter_headers(start):
            if h.base_offset < since:
                continue
            kind = control_type(os.pread(seg.fd, 128, pos)) if h.is_control else -1
            txn = state.replay(h, kind)
            if txn is not None:
                aborted.append(txn, -1)
    aborted.sync()
    return state
