"""Sealed search segments: one file (one object in the object store) per segment.

Layout, chosen so that a Kafka fetch range-reads only the batch section and the small batch
index, never the Tantivy files:

    MAGIC | batches | batch index | tantivy files | manifest (JSON) | footer

- batches: the stored record batches exactly as they were in the WAL.
- batch index: one entry per batch, (last offset, position in the batch section, max
  timestamp), little-endian int64s; a fetch bisects it and reads exactly the batches it needs.
- tantivy files: the index's files back to back; the manifest names their spans.
- footer: manifest position (u64), manifest length (u32), MAGIC.

The manifest also lives in the registry, so a cold reader needs no extra request for it."""

from __future__ import annotations

import json
import mmap
import os
import struct
import sys
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c

from app.storage.fileutil import TrickleSync, fsync_dir
from app.storage.log import HEADER_SIZE, parse_header

MAGIC = b"CHRSEG1\n"
_FOOTER = struct.Struct("<QI8s")
FORMAT_VERSION = 1
_COPY_CHUNK = 4 * 1024 * 1024


class SegmentFormatError(Exception):
    pass


def _le(a: array[int]) -> bytes:
    if sys.byteorder != "little":
        a = array("q", a)
        a.byteswap()
    return a.tobytes()


@dataclass
class BatchIndex:
    """Every batch of a segment: last offsets, positions (relative to the batch section) and
    max timestamps; `size` is the batch section's length."""

    lasts: array[int]
    positions: array[int]
    max_timestamps: array[int]
    size: int

    @classmethod
    def from_bytes(cls, data: bytes, size: int) -> BatchIndex:
        flat = array("q")
        flat.frombytes(data)
        if sys.byteorder != "little":
            flat.byteswap()
        return cls(flat[0::3], flat[1::3], flat[2::3], size)

    def to_bytes(self) -> bytes:
        flat = array("q", [0]) * (3 * len(self.lasts))
        flat[0::3], flat[1::3], flat[2::3] = self.lasts, self.positions, self.max_timestamps
        return _le(flat)

    def end_of(self, i: int) -> int:
        return self.positions[i + 1] if i + 1 < len(self.positions) else self.size

    def span(
        self,
        offset: int,
        max_bytes: int,
        first_whole: bool = True,
        stop_offset: int | None = None,
        base: int = 0,
    ) -> tuple[int, int] | None:
        """(start, end) in the batch section of whole batches from the first one holding
        `offset` or a later offset, at most `max_bytes` except that the first is always whole
        when `first_whole` (KIP-74), and none starting at or after `stop_offset` (`base` is
        the first batch's base offset). None when no batch qualifies."""
        i = bisect_left(self.lasts, offset)
        n = len(self.lasts)
        if stop_offset is not None:
            # A batch starts right after its predecessor's last offset.
            n = min(n, bisect_left(self.lasts, stop_offset - 1) + 1)
            first_base = self.lasts[i - 1] + 1 if i > 0 else base
            if first_base >= stop_offset:
                return None
        if i >= n:
            return None
        start = self.positions[i]
        if not first_whole and self.end_of(i) - start > max_bytes:
            return None
        j = i + 1
        while j < n and self.end_of(j) - start <= max_bytes:
            j += 1
        return start, self.end_of(j - 1)

    def first_at_or_after_time(self, ts: int) -> int | None:
        """Index of the first batch whose max timestamp is at least `ts`."""
        for i, t in enumerate(self.max_timestamps):
            if t >= ts:
                return i
        return None


def scan_batches(data: bytes | memoryview | mmap.mmap, size: int) -> tuple[BatchIndex, int, int]:
    """The batch index of a batch section, its first base offset (-1 when it is empty) and
    its record count. Offsets may have gaps between batches (a cleaned segment's)."""
    lasts, positions, times = array("q"), array("q"), array("q")
    pos = 0
    base = -1
    records = 0
    while pos + HEADER_SIZE <= size:
        h = parse_header(data, pos)
        if h.size < HEADER_SIZE or pos + h.size > size:
            raise SegmentFormatError(f"batch at position {pos} runs past the section")
        if base < 0:
            base = h.base_offset
        lasts.append(h.last_offset)
        positions.append(pos)
        times.append(h.max_timestamp)
        records += h.records_count
        pos += h.size
    if pos != size:
        raise SegmentFormatError(f"{size - pos} stray bytes after the last batch")
    return BatchIndex(lasts, positions, times, size), base, records


def tantivy_commit(index_dir: Path) -> tuple[bytes, list[Path]]:
    """The index's current commit: its meta.json, read once, and the files of the segments
    it lists (left-overs of merges and lock files are not part of the index)."""
    meta_bytes = (index_dir / "meta.json").read_bytes()
    meta = json.loads(meta_bytes)
    ids = {s["segment_id"].replace("-", "") for s in meta.get("segments", [])}
    files = [
        p for p in sorted(index_dir.iterdir()) if p.is_file() and p.name.split(".", 1)[0] in ids
    ]
    return meta_bytes, files


def write_segment(
    out: Path,
    *,
    topic: str,
    partition: int,
    batches_path: Path,
    batches_size: int,
    index_dir: Path,
    min_timestamp: int,
    max_timestamp: int,
    docs: int,
    base_offset: int | None = None,
    last_offset: int | None = None,
) -> dict[str, Any]:
    """Package a sealed segment into `out` (atomically, fsynced); returns its manifest.
    `base_offset`/`last_offset` give the segment's offset range when it is not that of its
    batches: a cleaned segment keeps its source's range though its first or last records
    were removed, and may hold no batch at all."""
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    sections: dict[str, Any] = {}
    with open(batches_path, "rb") as src, open(tmp, "wb") as raw:
        dst = TrickleSync(raw)
        dst.write(MAGIC)
        pos = len(MAGIC)
        crc = 0
        if batches_size:
            with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                if len(mm) < batches_size:
                    raise SegmentFormatError("batch file is shorter than its checkpoint")
                index, base, records = scan_batches(mm, batches_size)
                for off in range(0, batches_size, _COPY_CHUNK):
                    chunk = mm[off : min(off + _COPY_CHUNK, batches_size)]
                    crc = crc32c.crc32c(chunk, crc)
                    dst.write(chunk)
        elif base_offset is None or last_offset is None:
            raise SegmentFormatError("a segment without batches needs its offset range")
        else:
            index, base, records = scan_batches(b"", 0)
        base, last = _offset_range(index, base, base_offset, last_offset)
        sections["batches"] = {"offset": pos, "size": batches_size, "crc32c": crc}
        pos += batches_size
        index_bytes = index.to_bytes()
        dst.write(index_bytes)
        sections["index"] = {
            "offset": pos,
            "size": len(index_bytes),
            "crc32c": crc32c.crc32c(index_bytes),
        }
        pos += len(index_bytes)
        files = []
        tantivy_start = pos
        meta_bytes, segment_files = tantivy_commit(index_dir)
        for name in ["meta.json", *(f.name for f in segment_files)]:
            data = meta_bytes if name == "meta.json" else (index_dir / name).read_bytes()
            dst.write(data)
            files.append({"name": name, "offset": pos, "size": len(data)})
            pos += len(data)
        sections["tantivy"] = {"offset": tantivy_start, "size": pos - tantivy_start, "files": files}
        manifest = {
            "format": FORMAT_VERSION,
            "topic": topic,
            "partition": partition,
            "base_offset": base,
            "last_offset": last,
            "min_timestamp": min_timestamp,
            "max_timestamp": max(max_timestamp, max(index.max_timestamps, default=max_timestamp)),
            "records": records,
            "docs": docs,
            "batches": len(index.lasts),
            "sections": sections,
        }
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        dst.write(manifest_bytes)
        dst.write(_FOOTER.pack(pos, len(manifest_bytes), MAGIC))
        manifest["size"] = pos + len(manifest_bytes) + _FOOTER.size
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, out)
    fsync_dir(out.parent)
    return manifest


def _offset_range(
    index: BatchIndex, first_base: int, base_offset: int | None, last_offset: int | None
) -> tuple[int, int]:
    """The segment's [base, last]: its batches' unless given, and then covering them."""
    base = first_base if base_offset is None else base_offset
    last = index.lasts[-1] if last_offset is None else last_offset
    if index.lasts and (base > first_base or last < index.lasts[-1]):
        raise SegmentFormatError(
            f"offsets {base}-{last} do not cover the batches' {first_base}-{index.lasts[-1]}"
        )
    if last < base:
        raise SegmentFormatError(f"offset range {base}-{last} is inverted")
    return base, last


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a local segment file, checking the footer."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < len(MAGIC) + _FOOTER.size:
            raise SegmentFormatError(f"{path} is too short to be a segment")
        pos, length, magic = _FOOTER.unpack(os.pread(f.fileno(), _FOOTER.size, size - _FOOTER.size))
        if magic != MAGIC or pos + length + _FOOTER.size != size:
            raise SegmentFormatError(f"{path} has no valid segment footer")
        manifest: dict[str, Any] = json.loads(os.pread(f.fileno(), length, pos))
    manifest["size"] = size
    return manifest


def extract_tantivy(segment_path: Path, manifest: dict[str, Any], dest: Path) -> None:
    """Unpack the Tantivy files of a local segment into `dest` (for search)."""
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    with open(segment_path, "rb") as f:
        for entry in manifest["sections"]["tantivy"]["files"]:
            data = os.pread(f.fileno(), entry["size"], entry["offset"])
            (tmp / entry["name"]).write_bytes(data)
    os.replace(tmp, dest)


def verify_segment(path: Path) -> dict[str, Any]:
    """Check a local segment's footer and section checksums; returns its manifest."""
    manifest = read_manifest(path)
    sections = manifest["sections"]
    with open(path, "rb") as f:
        for name in ("batches", "index"):
            sec = sections[name]
            crc = 0
            for off in range(0, sec["size"], _COPY_CHUNK):
                n = min(_COPY_CHUNK, sec["size"] - off)
                crc = crc32c.crc32c(os.pread(f.fileno(), n, sec["offset"] + off), crc)
            if crc != sec["crc32c"]:
                raise SegmentFormatError(f"{path}: {name} section checksum mismatch")
    return manifest
