"""InitProducerId's decisions (Kafka's prepareInitProducerIdTransit,
prepareIncrementProducerEpoch and prepareProducerIdRotation) and ListTransactions' filter,
as pure functions of the metadata."""

from __future__ import annotations

from collections.abc import Callable, Collection

from .model import NO_EPOCH, TxnMetadata, TxnState, epoch_exhausted


def may_init(meta: TxnMetadata, expected_producer_id: int, expected_epoch: int | None) -> bool:
    """isValidProducerId: a producer that names its id and epoch is fenced unless the
    metadata is new, the id is current, or it is the previous id at an exhausted epoch (a
    retry of the rotation)."""
    if expected_epoch is None:
        return True
    return (
        meta.epoch == NO_EPOCH
        or expected_producer_id == meta.producer_id
        or (expected_producer_id == meta.last_producer_id and epoch_exhausted(expected_epoch))
    )


def next_incarnation(
    meta: TxnMetadata,
    timeout_ms: int,
    expected_epoch: int | None,
    now_ms: int,
    new_producer_id: Callable[[], int],
) -> TxnMetadata | None:
    """The metadata of an idle transactional id after InitProducerId, None when the
    expected epoch is fenced. `expected_epoch` is None for a producer that names none."""
    pid = meta.producer_id
    # Only a rotation changes it, as Kafka's prepareIncrementProducerEpoch: a retry of a
    # rotation must still recognise the producer id it rotated from.
    last_pid = meta.last_producer_id
    if epoch_exhausted(meta.epoch) and expected_epoch in (None, meta.epoch):
        # Out of epochs: a new producer id at epoch 0.
        pid = new_producer_id()
        last_pid = meta.producer_id
        epoch, last_epoch = 0, (NO_EPOCH if expected_epoch is None else meta.epoch)
    elif expected_epoch is None:
        epoch, last_epoch = meta.epoch + 1, NO_EPOCH
    elif meta.epoch == NO_EPOCH or expected_epoch == meta.epoch:
        epoch, last_epoch = meta.epoch + 1, meta.epoch
    elif expected_epoch == meta.last_epoch:
        # A retry of a bump whose answer was lost: the same answer again.
        epoch, last_epoch = meta.epoch, meta.last_epoch
    else:
        return None
    return meta.to(
        TxnState.EMPTY,
        now_ms,
        producer_id=pid,
        last_producer_id=last_pid,
        epoch=epoch,
        last_epoch=last_epoch,
        timeout_ms=timeout_ms,
        partitions=frozenset(),
        groups=frozenset(),
        txn_start_ms=-1,
    )


def listed(
    meta: TxnMetadata,
    states: Collection[TxnState] | None,
    producer_ids: Collection[int],
    duration_ms: int,
    now_ms: int,
) -> bool:
    """listTransactionStates' filter. `states` None: no state filter. The duration counts
    from the transaction's start, -1 for an id without one, as Kafka's does."""
    if meta.state is TxnState.DEAD:
        return False
    if producer_ids and meta.producer_id not in producer_ids:
        return False
    if states is not None and meta.state not in states:
        return False
    return not (duration_ms >= 0 and now_ms - meta.txn_start_ms <= duration_ms)
