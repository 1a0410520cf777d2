"""Crash-safe small-file writes."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

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


def remove_stale_tmp(directory: Path) -> None:
    """Temporary files left by a crash in the middle of atomic_write."""
    for p in directory.glob(".*.tmp"):
        p.unlink(missing_ok=True)
