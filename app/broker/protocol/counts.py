"""Array counts checked against the bytes left in the request, before kio reads it.

kio's native reader reserves an array's whole count up front, 8 bytes an element: a count
of 2^34 in a 30-byte request is a 128 GiB allocation, which aborts the process (Rust's
allocation failure handler), and 2^31-1 is 16 GiB of address space. Kafka's generated
readers refuse a count larger than the bytes left ("Tried to allocate a collection of size
N, but there are only M bytes remaining."), since every element takes at least a byte, and
so does this scan. It walks the request's wire layout as the kio schema describes it,
reading only lengths and counts, building nothing.

It also counts the elements of all arrays together, against MAX_ELEMENTS: a frame of N
bytes decodes into up to N/2 Python objects (a 15 MiB Metadata request of empty topic names
took kio 2.4 s of the event loop and 430 MB), and handlers walk each of them.
"""

from __future__ import annotations

import dataclasses
import struct
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

_FIXED_SIZES = {
    "bool": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "timedelta_i32": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "timedelta_i64": 8,
    "datetime_i64": 8,
    "uuid": 16,
}
_STRINGS = {"string": True, "bytes": False, "records": False}  # True: an int16 length

FIXED, TEXT, ARRAY_FIXED, ARRAY_TEXT, ARRAY_STRUCT, STRUCT = range(6)

# Array elements a request may hold, all arrays together: ~0.3 s of decoding and ~15 MB at
# worst. Far past any client's request to one broker (a Fetch or ListOffsets names each
# partition once; a topic has at most 10,000).
MAX_ELEMENTS = 250_000


class CountError(Exception):
    """An array count past the bytes left, or a length or count running past the end."""


@dataclass(frozen=True, slots=True)
class Layout:
    # (kind, argument): the size of a fixed field or element, whether a text field (or
    # element) has an int16 length, the Layout of a struct field or element
    ops: tuple[tuple[int, Any], ...]
    flexible: bool
    # tagged struct fields, scanned within their size; other tagged fields are skipped
    tagged: dict[int, Layout]
    # ops after this index hold no array (the scan of a whole request stops there)
    arrays_end: int
    # only fixed and text fields, no tagged struct: its elements are skipped inline
    simple: bool


@cache
def layout(entity: type) -> Layout:
    hints = typing.get_type_hints(entity)
    ops: list[tuple[int, Any]] = []
    tagged: dict[int, Layout] = {}
    arrays_end = 0
    for f in dataclasses.fields(entity):
        t = hints[f.name]
        if typing.get_origin(t) in (typing.Union, types.UnionType):
            t = next(a for a in typing.get_args(t) if a is not type(None))
        kafka_type = f.metadata.get("kafka_type")
        if "tag" in f.metadata:
            if isinstance(t, type) and dataclasses.is_dataclass(t):
                tagged[int(f.metadata["tag"])] = layout(t)
            continue
        if typing.get_origin(t) is tuple:
            (elem,) = typing.get_args(t)[:1]
            if kafka_type in _FIXED_SIZES:
                ops.append((ARRAY_FIXED, _FIXED_SIZES[kafka_type]))
            elif kafka_type in _STRINGS:
                ops.append((ARRAY_TEXT, _STRINGS[kafka_type]))
            else:
                ops.append((ARRAY_STRUCT, layout(elem)))
            arrays_end = len(ops)
        elif kafka_type in _FIXED_SIZES:
            if ops and ops[-1][0] == FIXED and len(ops) > arrays_end:
                ops[-1] = (FIXED, ops[-1][1] + _FIXED_SIZES[kafka_type])
            else:
                ops.append((FIXED, _FIXED_SIZES[kafka_type]))
        elif kafka_type in _STRINGS:
            ops.append((TEXT, _STRINGS[kafka_type]))
        elif isinstance(t, type) and dataclasses.is_dataclass(t):
            ops.append((STRUCT, layout(t)))
            if layout(t).arrays_end or layout(t).tagged:
                arrays_end = len(ops)
        else:
            raise TypeError(f"{entity.__name__}.{f.name}: no wire layout for {t!r}")
    if tagged:
        arrays_end = len(ops)
    flexible = bool(getattr(entity, "__flexible__", False))
    simple = not tagged and all(kind in (FIXED, TEXT) for kind, _ in ops)
    return Layout(tuple(ops), flexible, tagged, arrays_end, simple)


def check_counts(buf: bytes, pos: int, entity: type) -> int:
    """The number of array elements of the request at `pos`. CountError if an array counts
    more elements than bytes are left, all of them more than MAX_ELEMENTS, or a length runs
    past the end. The rest is kio's to judge."""
    lay = layout(entity)
    if not lay.arrays_end:
        return 0
    left = [MAX_ELEMENTS]
    try:
        _scan(buf, pos, len(buf), lay, lay.arrays_end, left)
    except IndexError:
        raise CountError("a length runs past the end of the request") from None
    return MAX_ELEMENTS - left[0]


def _spend(left: list[int], n: int) -> None:
    left[0] -= n
    if left[0] < 0:
        raise CountError(
            f"the request holds {MAX_ELEMENTS - left[0]} array elements or more, past the "
            f"{MAX_ELEMENTS} a request may hold"
        )


def _uvarint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end:
            raise CountError("a length runs past the end of the request")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise CountError("varint too long")


def _length(buf: bytes, pos: int, end: int, flexible: bool, short: bool) -> tuple[int, int]:
    """A string, bytes or array length (-1 for null) and the position after it."""
    if flexible:
        n, pos = _uvarint(buf, pos, end)
        return n - 1, pos
    size = 2 if short else 4
    if pos + size > end:
        raise CountError("a length runs past the end of the request")
    n = _I16.unpack_from(buf, pos)[0] if short else _I32.unpack_from(buf, pos)[0]
    return n, pos + size


def _scan(buf: bytes, pos: int, end: int, lay: Layout, stop: int, left: list[int]) -> int:
    flexible = lay.flexible
    for kind, arg in lay.ops[:stop]:
        if kind == FIXED:
            pos += arg
            continue
        if kind == TEXT:
            n, pos = _length(buf, pos, end, flexible, arg)
            pos += max(n, 0)
            continue
        if kind == STRUCT:
            pos = _scan(buf, pos, end, arg, len(arg.ops), left)
            continue
        n, pos = _length(buf, pos, end, flexible, False)
        if n > end - pos:
            raise CountError(
                f"Tried to allocate a collection of size {n}, but there are only "
                f"{max(end - pos, 0)} bytes remaining."
            )
        if n <= 0:
            continue
        _spend(left, n)
        if kind == ARRAY_FIXED:
            pos += n * arg
        elif kind == ARRAY_TEXT:
            for _ in range(n):
                size, pos = _length(buf, pos, end, flexible, arg)
                pos += max(size, 0)
        elif arg.simple:
            pos = _skip_simple(buf, pos, end, arg, n)
        else:
            inner = len(arg.ops)
            for _ in range(n):
                pos = _scan(buf, pos, end, arg, inner, left)
    if pos > end:
        raise CountError("the request ends inside a field")
    if flexible and stop == len(lay.ops):
        pos = _skip_tags(buf, pos, end, lay.tagged, left)
    return pos


def _skip_simple(buf: bytes, pos: int, end: int, lay: Layout, n: int) -> int:
    """n elements of fixed and text fields: the common one-byte lengths and empty tag
    buffers read inline, the rest as _scan does."""
    ops, flexible = lay.ops, lay.flexible
    for _ in range(n):
        for kind, arg in ops:
            if kind == FIXED:
                pos += arg
            elif flexible and buf[pos] < 0x80:
                pos += max(buf[pos], 1)  # the length byte, then length - 1 bytes
            else:
                size, pos = _length(buf, pos, end, flexible, arg)
                pos += max(size, 0)
        if flexible:
            if buf[pos] == 0:
                pos += 1
            else:
                pos = _skip_tags(buf, pos, end, {}, [0])
        if pos > end:
            raise CountError("the request ends inside a field")
    return pos


def _skip_tags(buf: bytes, pos: int, end: int, tagged: dict[int, Layout], left: list[int]) -> int:
    count, pos = _uvarint(buf, pos, end)
    if count > end - pos:
        raise CountError(f"{count} tagged fields, but there are only {end - pos} bytes remaining.")
    for _ in range(count):
        tag, pos = _uvarint(buf, pos, end)
        size, pos = _uvarint(buf, pos, end)
        if pos + size > end:
            raise CountError("a tagged field runs past the end of the request")
        inner = tagged.get(tag)
        if inner is not None:
            _scan(buf, pos, pos + size, inner, len(inner.ops), left)
        pos += size
    return pos
