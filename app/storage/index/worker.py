"""The indexer worker process: its loop over the partitions it is given (PartitionIndexer,
partition_indexer.py), their progress reports to the service, idle-time merges, and the ties
that make it die with the service."""

from __future__ import annotations

import logging
import os
import shutil
import time
from multiprocessing.connection import Connection
from typing import Any

from app.storage.index.merge import merge_partition
from app.storage.index.partition_indexer import (
    PartitionGone,
    PartitionIndexer,
    WorkerConfig,
    partition_dir_name,
)
from app.storage.index.sealing import object_key
from app.storage.process import worker_started
from app.storage.segments import Registry

log = logging.getLogger("app.storage.index")

NICE = 5
# How often an idle worker looks for small segments to merge.
MERGE_CHECK_S = 2.0
# A partition that failed to open is tried again after this long.
OPEN_RETRY_S = 5.0


def _drain(parts: dict[tuple[str, int], PartitionIndexer]) -> dict[str, Any]:
    """Counts since the last report, taken out of the partition indexers."""
    out: dict[str, Any] = {"records": 0, "errors": 0, "sealed": 0, "commit_seconds": []}
    for p in parts.values():
        out["records"] += p.records_indexed
        out["errors"] += p.errors
        out["sealed"] += p.sealed
        out["commit_seconds"] += p.commit_seconds
        p.records_indexed = p.errors = p.sealed = 0
        p.commit_seconds = []
    return out


def _merge_some(
    cfg: WorkerConfig, registry: Registry, parts: dict[tuple[str, int], PartitionIndexer]
) -> None:
    for topic, partition in list(parts):
        try:
            merged = merge_partition(
                registry,
                cfg.data_dir,
                topic,
                partition,
                cfg.index.segment_max_records,
                cfg.index.segment_max_bytes,
                object_key,
            )
        except Exception:
            log.exception("%s-%d: merging segments failed", topic, partition)
            continue
        if merged:
            # One merge per idle pass keeps indexing latency low on busy workers.
            return


def _open_partition(
    cfg: WorkerConfig,
    registry: Registry,
    key: tuple[str, int],
    state: tuple[int, int, int],
    broken: dict[tuple[str, int], tuple[float, tuple[int, int, int]]],
) -> PartitionIndexer | None:
    """A partition's indexer, or None (retried after a pause) if it cannot be opened: one
    partition's failure must not take the worker and its other partitions down. None, and
    no retry, if its topic was deleted meanwhile: the drop is on its way."""
    try:
        pi = PartitionIndexer(cfg, registry, key[0], key[1], state[1])
    except PartitionGone:
        return None
    except Exception:
        log.exception("%s-%d: cannot open for indexing; retrying in %gs", *key, OPEN_RETRY_S)
        broken[key] = (time.monotonic() + OPEN_RETRY_S, state)
        return None
    pi.set_state(*state)
    return pi


def _drop(
    cfg: WorkerConfig, registry: Registry, key: tuple[str, int], pi: PartitionIndexer | None
) -> None:
    """A deleted partition's files, and its checkpoint: a state message sent before the
    delete but read after it made this worker create the checkpoint again, and a topic
    re-created under the same name would have started from it, skipping its first records."""
    if pi is not None:
        pi.drop()
    else:
        shutil.rmtree(cfg.data_dir / "index" / partition_dir_name(*key), ignore_errors=True)
    registry.drop_partition_checkpoint(*key)


def worker_main(
    conn: Connection, cfg: WorkerConfig, log_level: str, parent_pid: int | None = None
) -> None:
    """The worker's loop. Messages in: ("state", {(topic, partition): (hw, log_start,
    seal_age_ms)}),
    ("drop", [(topic, partition)]), ("stop",). Out: ("progress", {...}) a few times a
    second. The worker exits when the service's end of the pipe closes."""
    # Acks first, freshness second: at 10k msg/s the worker's 0.5 cores beside the broker
    # took the produce-ack p99 from 8 to 14-23 ms; niced, the broker wins the CPU when both
    # want it, and search processes (niced further) yield to both.
    if parent_pid is not None:
        worker_started(parent_pid, NICE)
    else:
        os.nice(NICE)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    registry = Registry(cfg.data_dir / "registry.sqlite", durable=False)
    parts: dict[tuple[str, int], PartitionIndexer] = {}
    last_report = last_merge = 0.0
    busy = False
    # Partitions that failed to open: (retry time, their state).
    broken: dict[tuple[str, int], tuple[float, tuple[int, int, int]]] = {}
    try:
        while True:
            timeout = 0.0 if busy else 0.02
            while conn.poll(timeout):
                timeout = 0.0
                msg = conn.recv()
                if msg[0] == "stop":
                    for p in parts.values():
                        p.close()
                    return
                if msg[0] == "drop":
                    for key in msg[1]:
                        _drop(cfg, registry, key, parts.pop(key, None))
                        broken.pop(key, None)
                elif msg[0] == "state":
                    for key, state in msg[1].items():
                        pi = parts.get(key)
                        if pi is None:
                            broken.pop(key, None)
                            pi = _open_partition(cfg, registry, key, state, broken)
                            if pi is None:
                                continue
                            parts[key] = pi
                        pi.set_state(*state)
            now = time.monotonic()
            busy = False
            for key, (retry_at, state) in list(broken.items()):
                if now >= retry_at:
                    del broken[key]
                    pi = _open_partition(cfg, registry, key, state, broken)
                    if pi is not None:
                        parts[key] = pi
            for key, p in list(parts.items()):
                try:
                    busy = p.step(now) or busy
                except PartitionGone:
                    p.drop()
                    del parts[key]
                except Exception:
                    log.exception("%s-%d: indexing failed; reopening", p.topic, p.partition)
                    p.errors += 1
                    p.abandon()
                    del parts[key]
                    fresh = _open_partition(cfg, registry, key, p.get_state(), broken)
                    if fresh is not None:
                        fresh.errors, fresh.records_indexed = p.errors, p.records_indexed
                        parts[key] = fresh
            if not busy and now - last_merge >= MERGE_CHECK_S:
                last_merge = now
                _merge_some(cfg, registry, parts)
            if now - last_report >= 0.1:
                last_report = now
                parts_state = {
                    k: (p.searchable, p.cp.open_base, p.last_commit_ms) for k, p in parts.items()
                }
                conn.send(("progress", {"parts": parts_state, **_drain(parts)}))
    except (EOFError, ConnectionError, KeyboardInterrupt):
        # The service is gone (a reset, not only a closed pipe, when it died with reports
        # unread).
        pass
    finally:
        registry.close()
