"""One partition's indexing in an indexer worker process (worker.py): tails its
WAL, adds one document per record to its open search segment, commits at least every
`commit_ms`, and seals the open segment into a segment file (sealing.py) registered with
the checkpoint in one transaction.

Exactly once: the checkpoint (next offset to index, batch file length) is saved after each
Tantivy commit. On start, the batch file is cut back to the checkpoint and documents at or
past it are deleted before indexing resumes there, so a crash between commit and checkpoint
re-does work without duplicating it."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tantivy

from app.config import IndexConfig
from app.storage.fileutil import remove_large
from app.storage.index.aborts import delete_settled
from app.storage.index.docs import DocBuilder, build_schema
from app.storage.index.sealing import SEALING, frozen_batches, package
from app.storage.log import DecompressError, RecordError, WalTail, iter_records
from app.storage.segments import Checkpoint, Registry, SegmentRow

log = logging.getLogger("app.storage.index")

READ_CHUNK = 1024 * 1024
# Per open partition (Tantivy's arena; it wants >= 15 MB a thread). One indexing thread: a
# second one bought nothing in the bench while producing on two cores (53.6k vs 56-60k
# records/s) and the broker needs the CPU more.
WRITER_HEAP = 32 * 1024 * 1024
WRITER_THREADS = 1
# An idle partition's documents become searchable sooner than the commit interval.
IDLE_COMMIT_MS = 200


@dataclass(frozen=True)
class WorkerConfig:
    """What an indexer worker process is started with: the data directory and the index
    section of the settings."""

    data_dir: Path
    index: IndexConfig = field(default_factory=IndexConfig)


class PartitionGone(Exception):
    """The partition's checkpoint is gone: its topic was deleted and the worker has not been
    told yet. Its indexer is dropped; a re-created topic starts from a new checkpoint."""


def open_index_dir(open_dir: Path, base: int) -> Path:
    """The open segment's Tantivy directory. Named by the segment's base so a new open
    segment never reuses the old one's path: a search process still opening the old one
    could otherwise leave lock files in the new one as it is created."""
    return open_dir / f"tantivy-{base}"


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


# Packages frozen segments while the partitions go on indexing (one at a time per worker).
_SEALER = ThreadPoolExecutor(1, thread_name_prefix="seal")


class PartitionIndexer:
    def __init__(
        self, cfg: WorkerConfig, registry: Registry, topic: str, partition: int, start: int
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.topic, self.partition = topic, partition
        name = partition_dir_name(topic, partition)
        self.open_dir = cfg.data_dir / "index" / name
        self.wal = WalTail(cfg.data_dir / "logs" / name)
        self.builder = DocBuilder(partition)
        self.schema = build_schema()
        self.hw = 0
        self.log_start = 0
        # Compacted topics seal at their segment.ms when it is shorter (the service says).
        self.seal_age_ms = cfg.index.segment_max_age_ms
        self.records_indexed = 0
        self.errors = 0
        self.commit_seconds: list[float] = []
        self.sealed = 0
        self.last_commit_ms = 0
        self._uncommitted = 0
        self._first_uncommitted = 0.0
        self._batches: Any = None
        self.writer: tantivy.IndexWriter | None = None
        self._sealing: Future[tuple[str, dict[str, Any]]] | None = None
        cp = registry.checkpoint(topic, partition)
        if cp is None:
            registry.create_checkpoint(Checkpoint(topic, partition, start, start, {}))
            cp = registry.checkpoint(topic, partition)
            if cp is None:
                raise PartitionGone(topic, partition)
        self.cp = cp
        self._recover()
        # Every record below this is in a Tantivy commit (searchable); cp.indexed_offset runs
        # ahead of it between commits.
        self.searchable = self.cp.indexed_offset

    def set_state(self, hw: int, log_start: int, seal_age_ms: int) -> None:
        """What the service last sent for this partition."""
        self.hw, self.log_start, self.seal_age_ms = hw, log_start, seal_age_ms

    def get_state(self) -> tuple[int, int, int]:
        return self.hw, self.log_start, self.seal_age_ms

    # -- open segment lifecycle --------------------------------------------------------

    @property
    def index_dir(self) -> Path:
        return open_index_dir(self.open_dir, self.cp.open_base)

    @property
    def state(self) -> dict[str, Any]:
        return self.cp.open_state

    def _fresh(self, base: int) -> None:
        """An empty open segment at `base`, nothing else in the partition's directory."""
        shutil.rmtree(self.open_dir, ignore_errors=True)
        open_index_dir(self.open_dir, base).mkdir(parents=True)
        self._mark_open(base, {})

    def _mark_open(self, base: int, state: dict[str, Any]) -> None:
        """The open segment's directory and base file, and its checkpoint, at `base`."""
        open_index_dir(self.open_dir, base).mkdir(parents=True, exist_ok=True)
        (self.open_dir / "base").write_text(str(base))
        self.cp = Checkpoint(self.topic, self.partition, base, base, state)
        if not self.registry.save_checkpoint(self.cp):
            raise PartitionGone(self.topic, self.partition)
        self.searchable = base

    def _recover(self) -> None:
        frozen = self.cp.open_state.get(SEALING)
        if frozen is not None:
            self._recover_sealing(frozen)
        self._remove_strays()
        cp = self.cp
        batches = self.open_dir / "batches.bin"
        want = int(cp.open_state.get("batches_len", 0))
        try:
            same_base = int((self.open_dir / "base").read_text()) == cp.open_base
            usable = same_base and (batches.stat().st_size if want else 0) >= want
            index_dir = open_index_dir(self.open_dir, cp.open_base)
            usable = usable and (index_dir / "meta.json").exists()
        except (FileNotFoundError, ValueError):
            usable = False
        if not usable:
            # Lost or stale (sealed just before a crash): index the open range again.
            self._fresh(cp.open_base)
        try:
            index = tantivy.Index(self.schema, path=str(self.index_dir))
        except ValueError as exc:
            if not usable or "schema" not in str(exc):
                raise
            # Written before the schema gained a field (producer_id): index the open range
            # again, so that every record indexed from now on carries the new fields. The WAL
            # still holds the range: it is trimmed only below uploaded sealed segments.
            log.info(
                "%s-%d: open segment has an older schema; re-indexing it",
                self.topic,
                self.partition,
            )
            usable = False
            self._fresh(cp.open_base)
            cp = self.cp
            index = tantivy.Index(self.schema, path=str(self.index_dir))
        self.index = index
        self._open_writer()
        if usable:
            assert self.writer is not None
            with open(batches, "r+b") as f:
                f.truncate(want)
            q = index.parse_query(f"offset:[{cp.indexed_offset} TO *]")
            index.reload()
            if index.searcher().search(q, 1).count:  # type: ignore[attr-defined]
                self.writer.delete_documents_by_query(q)
                self.writer.commit()
        self._batches = open(batches, "ab")  # noqa: SIM115 (lives as long as the segment)
        self.wal.seek(cp.indexed_offset)

    def _remove_strays(self) -> None:
        """What a crash left of segments the checkpoint no longer names: a published
        frozen segment's files, removal leftovers."""
        if not self.open_dir.is_dir():
            return
        keep = {"base", "batches.bin", open_index_dir(self.open_dir, self.cp.open_base).name}
        if frozen := self.cp.open_state.get(SEALING):
            keep |= {
                open_index_dir(self.open_dir, frozen["base"]).name,
                frozen_batches(self.open_dir, frozen["base"]).name,
            }
        for p in self.open_dir.iterdir():
            if p.name not in keep:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def _recover_sealing(self, frozen: dict[str, Any]) -> None:
        """A segment frozen before the restart and not yet published: package it again (the
        committed new open segment beside it is kept), or index its range again."""
        try:
            key, manifest = package(
                self.cfg.data_dir,
                self.topic,
                self.partition,
                frozen,
                frozen_batches(self.open_dir, frozen["base"]),
                open_index_dir(self.open_dir, frozen["base"]),
            )
        except Exception as exc:
            log.warning(
                "%s-%d: the segment sealed before the restart cannot be packaged (%s); "
                "indexing from offset %d again",
                self.topic,
                self.partition,
                exc,
                frozen["base"],
            )
            self._fresh(frozen["base"])
            return
        self._publish(key, manifest)

    def _open_writer(self) -> None:
        for attempt in range(100):
            try:
                self.writer = self.index.writer(heap_size=WRITER_HEAP, num_threads=WRITER_THREADS)
                return
            except ValueError:
                # The lock of a worker that is still exiting.
                if attempt == 99:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._finish_sealing(wait=True)
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.commit()
            self.writer = None
        if self._batches is not None:
            self._batches.close()
        self.wal.close()

    def abandon(self) -> None:
        """Let go of the writer and files without committing (after a failure)."""
        self._abort_sealing()
        self.writer = None
        with contextlib.suppress(Exception):
            if self._batches is not None:
                self._batches.close()
        with contextlib.suppress(Exception):
            self.wal.close()

    def drop(self) -> None:
        self.abandon()
        shutil.rmtree(self.open_dir, ignore_errors=True)

    # -- indexing ----------------------------------------------------------------------

    def step(self, now: float) -> bool:
        """Do a bounded piece of work; True if there may be more right away."""
        if self._sealing is not None and self._sealing.done():
            self._finish_sealing(wait=False)
        cp = self.cp
        if cp.indexed_offset < self.log_start:
            self._skip_to(self.log_start)
        busy = False
        if cp.indexed_offset < self.hw:
            try:
                busy = self._index_some()
            except FileNotFoundError:
                # The topic was deleted under this step (its log directory with it).
                if self.wal.directory.is_dir():
                    raise
                raise PartitionGone(self.topic, self.partition) from None
        if self._uncommitted:
            waited = (now - self._first_uncommitted) * 1000
            if waited >= self.cfg.index.commit_ms or (not busy and waited >= IDLE_COMMIT_MS):
                self.commit()
        if self._should_seal(now):
            self.seal()
        return busy

    def _skip_to(self, offset: int) -> None:
        """Retention or DeleteRecords moved the log start past every record of the open
        segment: it is dropped, not sealed (a sealed segment below the log start would be
        published after the retention pass that removes such segments)."""
        self._abort_sealing()
        self._reset_open(offset)
        self.wal.seek(offset)

    def _index_some(self) -> bool:
        batches = self.wal.read(self.hw, READ_CHUNK)
        if not batches:
            if self.wal.offset > self.cp.indexed_offset:
                # A gap in the offsets (deleted records): nothing in it to commit.
                self.cp.indexed_offset = self.wal.offset
                if not self._uncommitted:
                    self.searchable = self.wal.offset
            return False
        writer = self.writer
        assert writer is not None
        state = self.state
        builder = self.builder
        docs = 0
        for n, (h, data) in enumerate(batches):
            if h.last_offset < self.cp.indexed_offset:
                continue
            if self._full():
                self.wal.unread(batches[n:])
                break
            self._batches.write(data)
            state["batches_len"] = state.get("batches_len", 0) + h.size
            state["records"] = state.get("records", 0) + h.records_count
            state.setdefault("created_ms", int(time.time() * 1000))
            lo, hi = h.base_timestamp, h.max_timestamp
            if not h.is_control:
                # Search leaves out aborted and open transactions by producer id (docs.py).
                pid = h.producer_id if h.is_transactional else None
                try:
                    for rec in iter_records(data):
                        try:
                            writer.add_json(builder.doc(rec, pid))
                        except ValueError:
                            self.errors += 1
                            writer.add_json(builder.text_doc(rec, pid))
                        docs += 1
                        lo = min(lo, rec.timestamp)
                        hi = max(hi, rec.timestamp)
                except (RecordError, DecompressError) as exc:
                    # The batch stays fetchable; its records just cannot be searched.
                    self.errors += 1
                    log.warning(
                        "%s-%d: batch at offset %d not indexed: %s",
                        self.topic,
                        self.partition,
                        h.base_offset,
                        exc,
                    )
            state["min_ts"] = min(state.get("min_ts", lo), lo)
            state["max_ts"] = max(state.get("max_ts", hi), hi)
            self.cp.indexed_offset = h.next_offset
        self.errors += builder.errors
        builder.errors = 0
        state["docs"] = state.get("docs", 0) + docs
        self.records_indexed += docs
        if self._uncommitted == 0:
            self._first_uncommitted = time.monotonic()
        self._uncommitted += max(docs, 1)
        return True

    def commit(self) -> None:
        if self.writer is None:
            return
        started = time.monotonic()
        self._batches.flush()
        # The batch file must be on disk before a checkpoint that counts its length.
        os.fsync(self._batches.fileno())
        self.writer.commit()
        if not self.registry.save_checkpoint(self.cp):
            raise PartitionGone(self.topic, self.partition)
        self.searchable = self.cp.indexed_offset
        self.commit_seconds.append(time.monotonic() - started)
        self.last_commit_ms = int(time.time() * 1000)
        self._uncommitted = 0

    def _full(self) -> bool:
        state, cfg = self.state, self.cfg.index
        return (
            state.get("records", 0) >= cfg.segment_max_records
            or state.get("batches_len", 0) >= cfg.segment_max_bytes
        )

    def _should_seal(self, now: float) -> bool:
        state = self.state
        if not state.get("batches_len"):
            return False
        age_ms = time.time() * 1000 - state.get("created_ms", 0)
        return self._full() or age_ms >= self.seal_age_ms

    def seal(self, wait: bool = False) -> None:
        """Freeze the open segment and start a new one at once; a thread packages the
        frozen one (sealing.py), which is published with the checkpoint when it is done
        (`wait`: before returning). Its last commit deletes the documents of the aborted
        transactions it settles (aborts.py)."""
        self._finish_sealing(wait=True)
        if not self.state.get("batches_len"):
            return  # the previous seal failed and its range is being indexed again
        cp = self.cp
        if self.writer is not None:
            delete_settled(self.writer, self.wal.directory, cp.open_base, cp.indexed_offset - 1)
        self.commit()
        # Dropping the writer stops the merges in flight from changing the commit (their
        # work is discarded): waiting for them took 2.0 s of a 2.4 s seal at 10k msg/s.
        self.writer = None
        self._batches.close()
        keep = ("batches_len", "records", "docs", "min_ts", "max_ts")
        frozen = {k: cp.open_state[k] for k in keep if k in cp.open_state}
        frozen.update(base=cp.open_base, next=cp.indexed_offset)
        index_dir = self.index_dir
        batches = frozen_batches(self.open_dir, cp.open_base)
        # A crash from here until the new checkpoint is saved finds no batch file for the
        # old one and indexes its range again.
        os.replace(self.open_dir / "batches.bin", batches)
        self._start_open(cp.indexed_offset, {SEALING: frozen})
        self._sealing = _SEALER.submit(
            package, self.cfg.data_dir, self.topic, self.partition, frozen, batches, index_dir
        )
        if wait:
            self._finish_sealing(wait=True)

    def _finish_sealing(self, wait: bool) -> None:
        fut = self._sealing
        if fut is None or not (wait or fut.done()):
            return
        self._sealing = None
        try:
            key, manifest = fut.result()
        except Exception:
            base = self.cp.open_state[SEALING]["base"]
            log.exception(
                "%s-%d: packaging a sealed segment failed; indexing from offset %d again",
                self.topic,
                self.partition,
                base,
            )
            self._reset_open(base)
            self.wal.seek(base)
            return
        try:
            # The checkpoint published with the row must be one Tantivy has committed.
            self.commit()
        except PartitionGone:
            self._discard(key)
            raise
        self._publish(key, manifest)

    def _publish(self, key: str, manifest: dict[str, Any]) -> None:
        frozen = self.cp.open_state.pop(SEALING)
        if not self.registry.publish(SegmentRow.sealed(key, manifest), self.cp):
            self._discard(key)
            raise PartitionGone(self.topic, self.partition)
        self.sealed += 1
        # Searches still planned with it see it vanish and plan again (search/engine.py).
        shutil.rmtree(open_index_dir(self.open_dir, frozen["base"]), ignore_errors=True)
        remove_large(frozen_batches(self.open_dir, frozen["base"]))

    def _abort_sealing(self) -> None:
        """Forget a frozen segment (its range is dropped or indexed again)."""
        fut, self._sealing = self._sealing, None
        if fut is not None:
            with contextlib.suppress(Exception):
                self._discard(fut.result()[0])
        self.cp.open_state.pop(SEALING, None)

    def _discard(self, key: str) -> None:
        """A packaged segment that will not be published."""
        (self.cfg.data_dir / "segments" / key).unlink(missing_ok=True)
        shutil.rmtree(self.cfg.data_dir / "search" / key, ignore_errors=True)

    def _start_open(self, base: int, state: dict[str, Any]) -> None:
        """A new open segment at `base` beside a frozen one, ready to index."""
        self.builder.reset()
        self._mark_open(base, state)
        self._open_index()

    def _reset_open(self, base: int) -> None:
        """Everything of the partition's open and frozen segments dropped; a new one at
        `base`."""
        self.writer = None
        if self._batches is not None and not self._batches.closed:
            self._batches.close()
        self.builder.reset()
        self._fresh(base)
        self._open_index()

    def _open_index(self) -> None:
        self.index = tantivy.Index(self.schema, path=str(self.index_dir))
        self._open_writer()
        self._batches = open(self.open_dir / "batches.bin", "ab")  # noqa: SIM115
        self._uncommitted = 0
