"""What the transaction coordinator knows of one transactional.id: Kafka's TransactionState
names and TransactionMetadata, as immutable values so a transition is a new value written to
the store before it replaces the old one."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

NO_PRODUCER_ID = -1
NO_EPOCH = -1
# Kafka moves a transactional.id to a new producer id once its epoch reaches Short.MaxValue - 1,
# keeping Short.MaxValue for a last fencing bump.
MAX_EPOCH = 2**15 - 1


def epoch_exhausted(epoch: int) -> bool:
    return epoch >= MAX_EPOCH - 1


class TxnState(enum.Enum):
    """The values are Kafka's state names, as DescribeTransactions and ListTransactions show
    them and as the store keeps them."""

    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"
    DEAD = "Dead"
    PREPARE_EPOCH_FENCE = "PrepareEpochFence"

    @property
    def preparing(self) -> bool:
        return self in _PREPARING

    @property
    def open(self) -> bool:
        """A transaction exists that has not been completed on every partition."""
        return self in _OPEN

    @property
    def idle(self) -> bool:
        """No transaction: the next AddPartitions starts one."""
        return self in _IDLE


_PREPARING = frozenset(
    {TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT, TxnState.PREPARE_EPOCH_FENCE}
)
_OPEN = _PREPARING | {TxnState.ONGOING}
_IDLE = frozenset({TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT})
STATE_NAMES = {s.value: s for s in TxnState}

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TxnMetadata:
    transactional_id: str
    producer_id: int
    # The producer id and epoch before the last InitProducerId: a retry of that call (KIP-360)
    # is recognised by them and answered with the same result.
    last_producer_id: int
    epoch: int
    last_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[TopicPartition] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)
    txn_start_ms: int = -1
    last_update_ms: int = -1

    def expired(self, now_ms: int) -> bool:
        """Kafka's timedOutTransactions: measured from the transaction's start."""
        return self.state is TxnState.ONGOING and self.txn_start_ms + self.timeout_ms < now_ms

    def to(self, state: TxnState, now_ms: int, **changes: Any) -> TxnMetadata:
        return replace(self, state=state, last_update_ms=now_ms, **changes)
