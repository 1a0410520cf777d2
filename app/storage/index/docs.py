"""Search documents: the Tantivy schema and one JSON document per Kafka record.

Fields: `partition`, `offset`, `timestamp` (ms) as fast integers; `key` (tokenized) and
`key_exact` (raw, fast, for term breakdowns); `text`, the value's full text; `value`, a fast
JSON field with a JSON object's fields by path (`value.level:error`,
`value.status:[500 TO 599]`; fast because Tantivy range queries and terms aggregations on
JSON paths need it); `headers` as a JSON field keyed by header name. The full text is a
separate field rather than the JSON root because a fast JSON field would also put every
whole value into its columnar store (bench: 94 vs 67 bytes per record). `producer_id`, a
fast integer, only on records of transactional batches: search leaves out those of aborted and
open transactions by producer and offset range (search/engine.py); other records carry nothing,
so an index without transactions costs what it did. It is the last field: an index written
before it existed has the same field ids for the others, so such an index can be merged with
newer ones under the newer schema (merge.py). Nothing else is stored: a hit's record is read
back from the segment's batch section by offset."""

from __future__ import annotations

import time
from typing import Any

import orjson
import tantivy

from app.storage.log import Record

# Deeper objects are indexed as text: they are rarely queried by path and cost a lot.
MAX_JSON_DEPTH = 16
# Values this large are indexed as text only; their JSON paths would bloat the index.
MAX_JSON_BYTES = 256 * 1024

PRODUCER_ID = "producer_id"

_KINDS: dict[type, str] = {str: "s", int: "n", float: "n", bool: "b", dict: "o", list: "a"}


def build_schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_integer_field("partition", stored=True, indexed=True, fast=True)
    sb.add_integer_field("offset", stored=True, indexed=True, fast=True)
    sb.add_integer_field("timestamp", stored=True, indexed=True, fast=True)
    sb.add_text_field("key", stored=False)
    sb.add_text_field("key_exact", stored=False, tokenizer_name="raw", fast=True)
    sb.add_text_field("text", stored=False)
    sb.add_json_field("value", stored=False, fast=True)
    sb.add_json_field("headers", stored=False)
    sb.add_integer_field(PRODUCER_ID, stored=False, indexed=True, fast=True)
    return sb.build()


class DocBuilder:
    """Turns records into document JSON for `IndexWriter.add_json`. It remembers the type of
    every JSON path seen in the open segment: a record whose field changes type is indexed as
    text (and counted as an error) so one odd producer cannot make paths ambiguous."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.paths: dict[str, str] = {}
        self.errors = 0

    def reset(self) -> None:
        self.paths.clear()

    def _fits(self, obj: dict[str, Any], prefix: str, depth: int) -> bool:
        if depth > MAX_JSON_DEPTH:
            return False
        paths = self.paths
        for k, v in obj.items():
            path = prefix + k
            kind = _KINDS.get(type(v), "x")
            seen = paths.get(path)
            if seen is None:
                paths[path] = kind
            elif seen != kind and v is not None:
                return False
            if kind == "o" and not self._fits(v, path + ".", depth + 1):
                return False
        return True

    def value_fields(self, value: bytes) -> bytes | None:
        """The `text` and `value` fields as JSON members, or None for values that are not
        UTF-8. A JSON object's own bytes are reused: re-serializing would cost more than
        parsing did."""
        try:
            text = value.decode()
        except UnicodeDecodeError:
            return None
        fields = b',"text":' + orjson.dumps(text)
        stripped = value.strip()
        if stripped[:1] == b"{" and len(stripped) <= MAX_JSON_BYTES:
            try:
                obj = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and obj:
                if self._fits(obj, "", 0):
                    return fields + b',"value":' + stripped
                self.errors += 1
        return fields

    def doc(self, rec: Record, producer_id: int | None = None) -> str:
        # A record without a timestamp (-1) gets the time it is indexed: its batch is stored
        # as produced, so the broker's append time is not in it, and indexing follows the
        # append closely. Never earlier than the append, so a recent time window finds it.
        ts = rec.timestamp if rec.timestamp >= 0 else time.time_ns() // 1_000_000
        parts = [b'{"partition":%d,"offset":%d,"timestamp":%d' % (self.partition, rec.offset, ts)]
        if producer_id is not None:
            parts.append(b',"producer_id":%d' % producer_id)
        if rec.key is not None:
            try:
                key = orjson.dumps(rec.key.decode())
                parts.append(b',"key":%s,"key_exact":%s' % (key, key))
            except UnicodeDecodeError:
                pass
        if rec.value is not None:
            value = self.value_fields(rec.value)
            if value is not None:
                parts.append(value)
        if rec.headers:
            headers: dict[str, Any] = {}
            for name, raw in rec.headers:
                if raw is None:
                    continue
                try:
                    text = raw.decode()
                except UnicodeDecodeError:
                    continue
                prev = headers.get(name)
                if prev is None:
                    headers[name] = text
                elif isinstance(prev, list):
                    prev.append(text)
                else:
                    headers[name] = [prev, text]
            if headers:
                parts.append(b',"headers":' + orjson.dumps(headers))
        parts.append(b"}")
        return b"".join(parts).decode()

    def text_doc(self, rec: Record, producer_id: int | None = None) -> str:
        """The fallback document when `doc()` was refused by Tantivy: no JSON paths."""
        saved = self.paths
        self.paths = {}
        try:
            doc = orjson.loads(self.doc(rec, producer_id))
        finally:
            self.paths = saved
        doc.pop("value", None)
        return orjson.dumps(doc).decode()
