"""Transactional offset commits (TxnOffsetCommit), as Kafka's GroupCoordinator handles them
before KIP-890: the group coordinator checks the group and the member, stages the offsets
as pending for the producer, and does not ask the transaction coordinator whether the group
is in the producer's transaction. The transaction coordinator ends them with
`complete_txn_offsets` once the outcome is decided (EndTxn, its timeout, fencing, and its
recovery after a restart, which may repeat a completion).

Pending offsets live only in the store (groups.sqlite), which OffsetFetch reads as well: they
survive a crash as they were acknowledged, and nothing but their groups is loaded on start."""

from __future__ import annotations

from collections.abc import Iterable

from .. import errors as e
from .model import DEAD, EMPTY, Group
from .table import GroupTable

# Kafka's offset.metadata.max.bytes default.
MAX_METADATA_BYTES = 4096

# (topic, partition, offset, leader epoch, metadata), as OffsetCommit stores them.
OffsetRow = tuple[str, int, int, int, str | None]


class TxnOffsetTable(GroupTable):
    def load(self) -> None:
        super().load()
        for group_id in self.store.groups_with_pending_txn_offsets():
            self.groups.setdefault(group_id, Group(group_id))

    def stage_txn_offsets(
        self,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        offsets: Iterable[OffsetRow],
        *,
        generation: int = -1,
        member_id: str = "",
        instance_id: str | None = None,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
    ) -> dict[tuple[str, int], int]:
        """TxnOffsetCommit of partitions known to exist: the error code of each
        (topic, partition). Staged offsets are durable and invisible to OffsetFetch until
        `complete_txn_offsets` commits them."""
        rows = list(offsets)
        if not group_id:
            return {(t, p): e.INVALID_GROUP_ID for t, p, *_ in rows}
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = Group(group_id)
        code = _check_txn_member(group, generation, member_id, instance_id)
        if code != e.NONE:
            return {(t, p): code for t, p, *_ in rows}
        fitting = [r for r in rows if len((r[4] or "").encode()) <= max_metadata_bytes]
        result = {(t, p): e.OFFSET_METADATA_TOO_LARGE for t, p, *_ in rows}
        if not fitting:
            return result
        if producer_id < 0:
            # Kafka writes a TxnOffsetCommit without a producer id as a plain commit.
            self.store.commit_offsets(group_id, fitting)
        elif producer_epoch < self.store.txn_producer_epoch(group_id, producer_id):
            # What Kafka's __consumer_offsets partition answers a fenced producer's append.
            code = e.INVALID_PRODUCER_EPOCH
        else:
            self.store.stage_txn_offsets(group_id, producer_id, producer_epoch, fitting)
        for t, p, *_ in fitting:
            result[(t, p)] = code
        return result

    async def complete_txn_offsets(
        self,
        group_id: str,
        producer_id: int,
        commit: bool,
        producer_epoch: int | None = None,
    ) -> None:
        """The transaction's outcome for this group: commit makes the producer's pending
        offsets the committed ones (one SQLite transaction), abort drops them. Completing
        again, or a group with nothing pending, is harmless. `producer_epoch`, the epoch of
        the outcome's marker, fences TxnOffsetCommits of older epochs from then on, also in
        a group that the producer named in AddOffsetsToTxn but has staged nothing for yet
        (Kafka writes the marker to the group's __consumer_offsets partition all the same)."""
        done = self.store.complete_txn_offsets(group_id, producer_id, commit, producer_epoch)
        if done and commit and group_id not in self.groups:
            self.groups[group_id] = Group(group_id)

    def has_pending_txn_offsets(self, group_id: str, topic: str, partition: int) -> bool:
        """Kafka's hasPendingOffsetCommitsForTopicPartition: OffsetFetch with
        require_stable answers UNSTABLE_OFFSET_COMMIT for such a partition."""
        return self.store.has_pending_txn_offsets(group_id, topic, partition)

    def pending_txn_partitions(self, group_id: str) -> set[tuple[str, int]]:
        return self.store.pending_txn_partitions(group_id)


def _check_txn_member(
    group: Group, generation: int, member_id: str, instance_id: str | None
) -> int:
    """Kafka's validateOffsetCommit for a transactional commit: members are checked only
    when the request names one (v3, KIP-447); a producer without one may commit to a
    group in any state."""
    if group.state == DEAD:
        return e.COORDINATOR_NOT_AVAILABLE
    if generation < 0 and group.state == EMPTY:
        return e.NONE
    if generation < 0 and not member_id and instance_id is None:
        return e.NONE
    if instance_id is not None:
        known = group.static.get(instance_id)
        if known is None:
            return e.UNKNOWN_MEMBER_ID
        if known != member_id:
            return e.FENCED_INSTANCE_ID
    if member_id not in group.members:
        return e.UNKNOWN_MEMBER_ID
    if generation != group.generation:
        return e.ILLEGAL_GENERATION
    return e.NONE
