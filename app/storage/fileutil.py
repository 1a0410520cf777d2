"""Crash-safe file writes."""

from __future__ import annotations

import contextlib
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

_tmp_counter = itertools.count()


def fsync_dir(path: Path) -> None:
    """Make entries created or renamed in `path` survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, sync: bool = True) -> None:
    """Replace `path` with `data` so a reader sees either the old or the new content, never a
    mix: write a temporary file, fsync it, rename it over, fsync the directory."""
    # Unique temporary names let two writers (the fsync thread and a close) race safely.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


SYNC_EVERY = 1 << 20


class TrickleSync:
    """A large file's writes, synced every SYNC_EVERY bytes instead of once at the end.
    On ext4 the WAL's fsync (a produce's ack) waits for the journal, which waits for the
    dirty data of any file being fsynced meanwhile: one fsync of a 236 MB segment held
    WAL fsyncs for up to 390 ms; synced every 1 MiB, 13 ms (the copy takes ~1 s, not 0.6)."""

    def __init__(self, f: BinaryIO, every: int = SYNC_EVERY) -> None:
        self.f = f
        self.every = every
        self._dirty = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        for start in range(0, len(view), self.every):
            chunk = view[start : start + self.every]
            self.f.write(chunk)
            self._dirty += len(chunk)
            if self._dirty >= self.every:
                self.f.flush()
                os.fdatasync(self.f.fileno())
                self._dirty = 0
        return len(view)


TRUNCATE_STEP = 8 << 20
_remover: ThreadPoolExecutor | None = None


def remove_large(path: Path) -> None:
    """Delete a large file (a WAL or search segment) without stalling acks: the name goes at
    once, the data in a background thread, a few MiB at a time. Unlinking a 240 MB file
    took ~0.2 s (on the event loop, that long with no produce answered) and held other
    files' fsyncs for up to 94 ms; truncated 8 MiB at a time, 16 ms. A crash in between
    leaves a temporary name that remove_stale_tmp clears."""
    global _remover
    trash = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    if _remover is None:
        _remover = ThreadPoolExecutor(1, thread_name_prefix="remove-large")
    _remover.submit(_shrink_and_unlink, trash)


def _shrink_and_unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY)
        try:
            size = os.fstat(fd).st_size
            while size > 0:
                size = max(size - TRUNCATE_STEP, 0)
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
    path.unlink(missing_ok=True)


def remove_stale_tmp(directory: Path) -> None:
    """Temporary files left by a crash in the middle of atomic_write."""
    for p in directory.glob(".*.tmp"):
        p.unlink(missing_ok=True)
