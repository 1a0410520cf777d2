"""The transaction coordinator: Kafka's TransactionCoordinator for one broker.

Every transition is written to the store before it is acted on (markers written) or
answered. EndTxn writes PrepareCommit/PrepareAbort, writes the markers and completes the
groups' transactional offsets, writes CompleteCommit/CompleteAbort and only then answers:
markers are local, so the client sees a finished transaction. A Prepare* state left by a
crash or a failed marker write is finished by recovery or by the next tick.

The coordinator is sans-broker: producer-id allocation, marker writing and offset
completion are passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from ...storage.errors import UnknownTopic
from .. import metrics
from ..errors import (
    CONCURRENT_TRANSACTIONS,
    COORDINATOR_LOAD_IN_PROGRESS,
    INVALID_PRODUCER_EPOCH,
    INVALID_PRODUCER_ID_MAPPING,
    INVALID_REQUEST,
    INVALID_TRANSACTION_TIMEOUT,
    INVALID_TXN_STATE,
    NONE,
    NOT_ENOUGH_REPLICAS,
    PRODUCER_FENCED,
    TRANSACTIONAL_ID_NOT_FOUND,
)
from .model import (
    MAX_EPOCH,
    NO_EPOCH,
    NO_PRODUCER_ID,
    STATE_NAMES,
    TopicPartition,
    TxnMetadata,
    TxnState,
)
from .store import TransactionStore
from .transitions import listed, may_init, next_incarnation

log = logging.getLogger(__name__)

# (topic, partition, producer id, producer epoch, commit)
MarkerWriter = Callable[[str, int, int, int, bool], Awaitable[None]]
# (group id, producer id, producer epoch, commit)
OffsetCompleter = Callable[[str, int, int, bool], Awaitable[None]]

COMMIT = "commit"
ABORT = "abort"
TIMEOUT = "timeout"
FENCED = "fenced"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class InitResult:
    error: int
    producer_id: int = NO_PRODUCER_ID
    epoch: int = NO_EPOCH


class TransactionCoordinator:
    def __init__(
        self,
        store: TransactionStore,
        *,
        next_producer_id: Callable[[], int],
        write_marker: MarkerWriter,
        complete_offsets: OffsetCompleter | None = None,
        max_timeout_ms: int = 900_000,
        abort_check_ms: int = 1000,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.store = store
        self._next_producer_id = next_producer_id
        self._write_marker = write_marker
        self._complete_offsets = complete_offsets
        self.max_timeout_ms = max_timeout_ms
        self.abort_check_ms = abort_check_ms
        self._clock = clock
        self._txns: dict[str, TxnMetadata] = {}
        self._by_producer: dict[int, str] = {}
        self._open: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        # Until recovery has run, every request answers COORDINATOR_LOAD_IN_PROGRESS.
        self.loading = True

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the store and finish what a crash left: Prepare* completes as it was
        decided, Ongoing past its timeout is aborted; then start the timeout task."""
        for meta in self.store.load().values():
            self._remember(meta)
        await self.recover()
        self.loading = False
        self._task = asyncio.create_task(self._tick_forever(), name="txn-timeouts")

    async def recover(self) -> None:
        await self._finish_pending(recovery=True)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.abort_check_ms / 1000)
            try:
                await self._finish_pending(recovery=False)
            except Exception:
                log.exception("transaction timeout check failed")

    async def abort_timed_out(self) -> None:
        """One pass of the timeout task (Kafka's abortTimedOutTransactions)."""
        await self._finish_pending(recovery=False)

    async def _finish_pending(self, recovery: bool) -> None:
        now = self._clock()
        work: list[Awaitable[object]] = []
        for tid, meta in list(self._txns.items()):
            # A held lock is a request or a completion in progress; it finishes on its own.
            if self._lock(tid).locked():
                continue
            if meta.state.preparing or meta.expired(now):
                work.append(self._finish_one(tid, recovery))
        if work:
            await asyncio.gather(*work)

    async def _finish_one(self, tid: str, recovery: bool) -> None:
        async with self._lock(tid):
            meta = self._txns.get(tid)
            if meta is None:
                return
            if meta.state is TxnState.PREPARE_COMMIT:
                await self._complete(meta, COMMIT)
            elif meta.state in (TxnState.PREPARE_ABORT, TxnState.PREPARE_EPOCH_FENCE):
                if meta.state is TxnState.PREPARE_EPOCH_FENCE:
                    # Never written by this coordinator (the fence goes straight to
                    # PrepareAbort with the bumped epoch), but its meaning is an abort.
                    meta = self._put(meta.to(TxnState.PREPARE_ABORT, self._clock()))
                await self._complete(meta, ABORT)
            elif meta.expired(self._clock()):
                if not recovery:
                    log.info(
                        "aborting transaction of %r (producer %d epoch %d): older than its "
                        "timeout of %d ms",
                        tid,
                        meta.producer_id,
                        meta.epoch,
                        meta.timeout_ms,
                    )
                await self._fence_and_abort(meta, TIMEOUT)

    # -- state ---------------------------------------------------------------------------

    def _lock(self, tid: str) -> asyncio.Lock:
        lock = self._locks.get(tid)
        if lock is None:
            lock = self._locks[tid] = asyncio.Lock()
        return lock

    def _remember(self, meta: TxnMetadata) -> None:
        tid = meta.transactional_id
        old = self._txns.get(tid)
        if old is not None and old.producer_id != meta.producer_id:
            self._by_producer.pop(old.producer_id, None)
        self._txns[tid] = meta
        self._by_producer[meta.producer_id] = tid
        if meta.state.open:
            self._open.add(tid)
        else:
            self._open.discard(tid)
        metrics.TRANSACTIONS_OPEN.set(len(self._open))

    def _put(self, meta: TxnMetadata) -> TxnMetadata:
        """Durable first, then visible."""
        self.store.save(meta)
        self._remember(meta)
        return meta

    def get(self, transactional_id: str) -> TxnMetadata | None:
        return self._txns.get(transactional_id)

    # -- InitProducerId ------------------------------------------------------------------

    def check_timeout(self, timeout_ms: int) -> int:
        return NONE if 0 < timeout_ms <= self.max_timeout_ms else INVALID_TRANSACTION_TIMEOUT

    async def init_producer_id(
        self,
        transactional_id: str,
        timeout_ms: int,
        expected_producer_id: int = NO_PRODUCER_ID,
        expected_epoch: int = NO_EPOCH,
    ) -> InitResult:
        """TransactionCoordinator.handleInitProducerId with prepareInitProducerIdTransit.
        An Ongoing transaction is aborted with a fencing epoch first; Kafka then answers
        CONCURRENT_TRANSACTIONS and the client retries, here the retry happens at once."""
        if not transactional_id:
            return InitResult(INVALID_REQUEST)
        if (expected_producer_id == NO_PRODUCER_ID) != (expected_epoch == NO_EPOCH):
            return InitResult(INVALID_REQUEST)
        code = self.check_timeout(timeout_ms)
        if code != NONE:
            return InitResult(code)
        if self.loading:
            return InitResult(COORDINATOR_LOAD_IN_PROGRESS)
        expected = expected_producer_id != NO_PRODUCER_ID
        async with self._lock(transactional_id):
            meta = self._txns.get(transactional_id)
            if meta is None:
                meta = TxnMetadata(
                    transactional_id,
                    producer_id=self._next_producer_id(),
                    last_producer_id=NO_PRODUCER_ID,
                    epoch=NO_EPOCH,
                    last_epoch=NO_EPOCH,
                    timeout_ms=timeout_ms,
                    state=TxnState.EMPTY,
                    last_update_ms=self._clock(),
                )
            expected_at = expected_epoch if expected else None
            if not may_init(meta, expected_producer_id, expected_at):
                return InitResult(PRODUCER_FENCED)
            if meta.state is TxnState.ONGOING:
                meta = await self._fence_and_abort(meta, FENCED)
            if not meta.state.idle:
                # A completion that failed to write its markers; the tick retries it.
                return InitResult(CONCURRENT_TRANSACTIONS)
            new = next_incarnation(
                meta, timeout_ms, expected_at, self._clock(), self._next_producer_id
            )
            if new is None:
                return InitResult(PRODUCER_FENCED)
            self._put(new)
            return InitResult(NONE, new.producer_id, new.epoch)

    # -- AddPartitionsToTxn / AddOffsetsToTxn ---------------------------------------------

    def _request_error(self, transactional_id: str) -> int:
        if not transactional_id:
            return INVALID_REQUEST
        return COORDINATOR_LOAD_IN_PROGRESS if self.loading else NONE

    def _check_producer(self, meta: TxnMetadata | None, producer_id: int, epoch: int) -> int:
        if meta is None or meta.producer_id != producer_id:
            return INVALID_PRODUCER_ID_MAPPING
        if meta.epoch != epoch:
            return PRODUCER_FENCED
        return NONE

    async def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        epoch: int,
        partitions: Iterable[TopicPartition] = (),
        groups: Iterable[str] = (),
    ) -> int:
        """handleAddPartitionsToTransaction; AddOffsetsToTxn adds a group the same way."""
        code = self._request_error(transactional_id)
        if code != NONE:
            return code
        added_partitions = frozenset(partitions)
        added_groups = frozenset(groups)
        async with self._lock(transactional_id):
            meta = self._txns.get(transactional_id)
            code = self._check_producer(meta, producer_id, epoch)
            if code != NONE:
                return code
            assert meta is not None
            if meta.state.preparing:
                return CONCURRENT_TRANSACTIONS
            if (
                meta.state is TxnState.ONGOING
                and added_partitions <= meta.partitions
                and added_groups <= meta.groups
            ):
                return NONE
            if not (meta.state.idle or meta.state is TxnState.ONGOING):
                return INVALID_TXN_STATE
            now = self._clock()
            self._put(
                meta.to(
                    TxnState.ONGOING,
                    now,
                    partitions=meta.partitions | added_partitions,
                    groups=meta.groups | added_groups,
                    txn_start_ms=now if meta.state.idle else meta.txn_start_ms,
                )
            )
            return NONE

    def verify_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        epoch: int,
        partitions: Iterable[TopicPartition],
    ) -> dict[TopicPartition, int]:
        """handleVerifyPartitionsInTransaction (AddPartitionsToTxn v4 verify_only). Kafka
        answers TRANSACTION_ABORTABLE for a partition not in the transaction to a v5 client;
        v4 gets INVALID_TXN_STATE as its produce would."""
        wanted = list(partitions)
        if not transactional_id:
            return dict.fromkeys(wanted, INVALID_REQUEST)
        if self.loading:
            return dict.fromkeys(wanted, COORDINATOR_LOAD_IN_PROGRESS)
        meta = self._txns.get(transactional_id)
        code = self._check_producer(meta, producer_id, epoch)
        if code == NONE and meta is not None and meta.state.preparing:
            code = CONCURRENT_TRANSACTIONS
        if code != NONE or meta is None:
            return dict.fromkeys(wanted, code)
        return {tp: NONE if tp in meta.partitions else INVALID_TXN_STATE for tp in wanted}

    def check_produce(self, producer_id: int, epoch: int, topic: str, partition: int) -> int:
        """Transactional produce verification (KIP-890 part 1) as Kafka's ReplicaManager
        answers a Produce below v12: a partition not in the producer's ongoing transaction
        is INVALID_TXN_STATE, a stale epoch INVALID_PRODUCER_EPOCH, and a retriable
        coordinator state NOT_ENOUGH_REPLICAS, which old clients retry."""
        if self.loading:
            return NOT_ENOUGH_REPLICAS
        tid = self._by_producer.get(producer_id)
        meta = self._txns.get(tid) if tid is not None else None
        if meta is None or meta.producer_id != producer_id:
            return INVALID_PRODUCER_ID_MAPPING
        if meta.epoch != epoch:
            return INVALID_PRODUCER_EPOCH
        if meta.state.preparing:
            return NOT_ENOUGH_REPLICAS
        if meta.state is not TxnState.ONGOING or (topic, partition) not in meta.partitions:
            return INVALID_TXN_STATE
        return NONE

    # -- EndTxn ----------------------------------------------------------------------------

    async def end_txn(
        self, transactional_id: str, producer_id: int, epoch: int, commit: bool
    ) -> int:
        """handleEndTransaction for a client on transaction version 1 (no epoch bump per
        transaction). A retried EndTxn of a completed transaction with the same outcome
        answers NONE."""
        code = self._request_error(transactional_id)
        if code != NONE:
            return code
        async with self._lock(transactional_id):
            meta = self._txns.get(transactional_id)
            code = self._check_producer(meta, producer_id, epoch)
            if code != NONE:
                return code
            assert meta is not None
            state = meta.state
            if state is TxnState.ONGOING:
                prepare = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
                prepared = self._put(meta.to(prepare, self._clock()))
                await self._complete(prepared, COMMIT if commit else ABORT)
                # The outcome is decided and durable: if a marker could not be written,
                # the tick writes it later, and the client must not retry the other way.
                return NONE
            done = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
            pending = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
            if state is done:
                return NONE
            if state is pending:
                return CONCURRENT_TRANSACTIONS
            return INVALID_TXN_STATE

    async def _fence_and_abort(self, meta: TxnMetadata, outcome: str) -> TxnMetadata:
        """prepareFenceProducerEpoch + endTransaction(ABORT): the markers carry the bumped
        epoch, so the old producer's next write is refused by the partitions too."""
        fenced = self._put(
            meta.to(
                TxnState.PREPARE_ABORT,
                self._clock(),
                epoch=min(meta.epoch + 1, MAX_EPOCH),
                last_epoch=NO_EPOCH,
            )
        )
        return await self._complete(fenced, outcome)

    async def _complete(self, meta: TxnMetadata, outcome: str) -> TxnMetadata:
        """Markers on every partition, then the groups' offsets, then Complete*. On failure
        the Prepare* state stays, for the tick to retry."""
        commit = meta.state is TxnState.PREPARE_COMMIT
        pid, epoch = meta.producer_id, meta.epoch
        parts = sorted(meta.partitions)
        # Concurrent: the markers' fsyncs share one round of the log's group commit.
        results = await asyncio.gather(
            *(self._write_marker(t, p, pid, epoch, commit) for t, p in parts),
            return_exceptions=True,
        )
        failed = False
        for (t, p), result in zip(parts, results, strict=True):
            if isinstance(result, UnknownTopic):
                log.debug("no marker for %s-%d: the partition no longer exists", t, p)
            elif isinstance(result, BaseException):
                failed = True
                log.error(
                    "writing the %s marker of %r to %s-%d failed: %r",
                    "commit" if commit else "abort",
                    meta.transactional_id,
                    t,
                    p,
                    result,
                )
        if failed:
            return meta
        if meta.groups:
            if self._complete_offsets is None:
                log.error(
                    "transaction of %r has groups %s but no offset completer",
                    meta.transactional_id,
                    sorted(meta.groups),
                )
                return meta
            try:
                for group in sorted(meta.groups):
                    await self._complete_offsets(group, pid, epoch, commit)
            except Exception:
                log.exception("completing the offsets of %r failed", meta.transactional_id)
                return meta
        done = self._put(
            meta.to(
                TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT,
                self._clock(),
                partitions=frozenset(),
                groups=frozenset(),
            )
        )
        metrics.TRANSACTIONS.labels(outcome).inc()
        return done

    # -- DescribeTransactions / ListTransactions -------------------------------------------

    def describe(self, transactional_id: str) -> tuple[int, TxnMetadata | None]:
        if self.loading:
            return COORDINATOR_LOAD_IN_PROGRESS, None
        if not transactional_id:
            return INVALID_REQUEST, None
        meta = self._txns.get(transactional_id)
        if meta is None or meta.state is TxnState.DEAD:
            return TRANSACTIONAL_ID_NOT_FOUND, None
        return NONE, meta

    def list_transactions(
        self,
        states: Iterable[str] = (),
        producer_ids: Iterable[int] = (),
        duration_ms: int = -1,
    ) -> tuple[int, list[str], list[TxnMetadata]]:
        """listTransactionStates: (error, unknown state filters, matching transactions)."""
        if self.loading:
            return COORDINATOR_LOAD_IN_PROGRESS, [], []
        names = list(states)
        unknown = [n for n in names if n not in STATE_NAMES]
        wanted = {STATE_NAMES[n] for n in names if n in STATE_NAMES} if names else None
        pids = set(producer_ids)
        now = self._clock()
        out = [
            meta
            for _tid, meta in sorted(self._txns.items())
            if listed(meta, wanted, pids, duration_ms, now)
        ]
        return NONE, unknown, out


__all__ = [
    "ABORT",
    "COMMIT",
    "FENCED",
    "TIMEOUT",
    "InitResult",
    "MarkerWriter",
    "OffsetCompleter",
    "TransactionCoordinator",
]
