"""Reading a partition's WAL files from another process (the indexer workers), in offset
order, never past the high watermark the service reports (so never a torn or unsynced batch).
The service may delete old segment files at any time; the reader then moves on to the first
offset still on disk."""

from __future__ import annotations

import os
from pathlib import Path

from app.storage.log.batch import HEADER_SIZE, BatchHeader, parse_header
from app.storage.log.wal import list_segment_bases, segment_name


class WalTail:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._bases: list[int] = []
        self._fd: int | None = None
        self._base = -1
        self._pos = 0
        self.offset = 0  # the next offset this reader returns

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self, base: int) -> bool:
        self.close()
        try:
            self._fd = os.open(self.directory / segment_name(base, ".log"), os.O_RDONLY)
        except FileNotFoundError:
            return False
        self._base, self._pos = base, 0
        return True

    def seek(self, offset: int) -> None:
        """Position at the batch holding `offset`, or at the first batch after it if that
        offset is no longer on disk."""
        self.offset = offset
        self._bases = list_segment_bases(self.directory)
        candidates = [b for b in self._bases if b <= offset] or self._bases[:1]
        for base in reversed(candidates):
            if not self._open(base):
                continue
            while True:
                h = self._header()
                if h is None or h.last_offset >= offset:
                    break
                self._pos += h.size
            if h is not None:
                self.offset = max(offset, h.base_offset)
            return
        self.close()

    def _header(self) -> BatchHeader | None:
        assert self._fd is not None
        raw = os.pread(self._fd, HEADER_SIZE, self._pos)
        if len(raw) < HEADER_SIZE:
            return None
        return parse_header(raw)

    def _next_segment(self) -> bool:
        self._bases = list_segment_bases(self.directory)
        later = [b for b in self._bases if b > self._base]
        if not later:
            return False
        if not self._open(later[0]):
            return False
        self.offset = max(self.offset, later[0])
        return True

    def unread(self, batches: list[tuple[BatchHeader, memoryview]]) -> None:
        """Give back the tail of what read() returned (from the current segment)."""
        if batches:
            self._pos -= sum(h.size for h, _ in batches)
            self.offset = batches[0][0].base_offset

    def read(self, high_watermark: int, max_bytes: int) -> list[tuple[BatchHeader, memoryview]]:
        """Whole batches from the current offset, below `high_watermark`, about `max_bytes`
        (at least one batch)."""
        if self.offset >= high_watermark:
            return []
        if self._fd is None:
            self.seek(self.offset)
            if self._fd is None:
                return []
        out: list[tuple[BatchHeader, memoryview]] = []
        while not out:
            assert self._fd is not None
            try:
                chunk = memoryview(os.pread(self._fd, max_bytes, self._pos))
            except OSError:
                self.seek(self.offset)
                return []
            pos = 0
            while pos + HEADER_SIZE <= len(chunk):
                h = parse_header(chunk, pos)
                if h.base_offset >= high_watermark:
                    break
                if pos + h.size > len(chunk):
                    if not out:  # a batch larger than max_bytes
                        chunk = memoryview(os.pread(self._fd, h.size, self._pos + pos))
                        pos = 0
                        if len(chunk) < h.size:
                            break
                        out.append((h, chunk[: h.size]))
                        pos = h.size
                    break
                out.append((h, chunk[pos : pos + h.size]))
                pos += h.size
            self._pos += pos
            if out:
                self.offset = out[-1][0].next_offset
                return out
            if len(chunk) >= HEADER_SIZE or not self._next_segment():
                return out
        return out
