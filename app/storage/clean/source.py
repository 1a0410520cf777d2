"""A source segment's batch section, read from its local file by mmap."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import crc32c

from app.storage.log import HEADER_SIZE, BatchHeader, parse_header
from app.storage.segments import SegmentFormatError, read_manifest


class SourceFile:
    """The batches of one local segment file. The batch section's checksum is checked on
    opening: a cleaned copy of a damaged segment would publish the damage with a new,
    matching checksum."""

    def __init__(self, path: Path) -> None:
        self.path = path
        manifest = read_manifest(path)
        sec = manifest["sections"]["batches"]
        self.start, self.size = int(sec["offset"]), int(sec["size"])
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._mm: mmap.mmap | None = None
        try:
            if self.size:
                self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                if len(self._mm) < self.start + self.size:
                    raise SegmentFormatError(f"{path}: the batch section runs past the file")
                crc = 0
                for off in range(self.start, self.start + self.size, 4 << 20):
                    end = min(off + (4 << 20), self.start + self.size)
                    crc = crc32c.crc32c(self._mm[off:end], crc)
                if crc != sec["crc32c"]:
                    raise SegmentFormatError(f"{path}: batches section checksum mismatch")
        except BaseException:
            self.close()
            raise

    def batches(self, from_offset: int = -1) -> Iterator[tuple[int, BatchHeader, bytes]]:
        """(position in the section, header, bytes) of every batch with a last offset at or
        after `from_offset`, in order."""
        mm = self._mm
        if mm is None:
            return
        pos, end = self.start, self.start + self.size
        while pos < end:
            if end - pos < HEADER_SIZE:
                raise SegmentFormatError(f"{self.path}: stray bytes after the last batch")
            h = parse_header(mm, pos)
            if h.size < HEADER_SIZE or pos + h.size > end:
                raise SegmentFormatError(f"{self.path}: batch at {pos} runs past the section")
            if h.last_offset >= from_offset:
                yield pos - self.start, h, mm[pos : pos + h.size]
            pos += h.size

    def section(self, start: int, end: int) -> Iterator[tuple[BatchHeader, bytes]]:
        """The batches between two positions of the section (batch boundaries)."""
        mm = self._mm
        pos = self.start + start
        while mm is not None and pos < self.start + end:
            h = parse_header(mm, pos)
            yield h, mm[pos : pos + h.size]
            pos += h.size

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self._file.close()

    def __enter__(self) -> SourceFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
