"""Consumer groups as the HTTP API and the lag metric show them: the coordinator's state,
each member's assignment decoded from its consumer-protocol bytes, and the committed
offsets against the partitions' high watermarks. Plain dicts in the shape of app/api/groups.py
(the API cannot import the broker); the API filters them by the caller's ACLs.

Reads the coordinator's dicts and its SQLite store, so it runs on the broker's loop (the
lag collector hops there from the scrape thread)."""

from __future__ import annotations

import struct
from typing import Any

from ...storage.errors import UnknownTopic
from ...storage.store import Storage
from .coordinator import GroupCoordinator
from .model import Group, Member

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def decode_assignment(data: bytes) -> list[dict[str, Any]]:
    """ConsumerProtocolAssignment (every version starts the same: version i16, then
    [topic string, [partition i32]]; user data and later fields are not needed). Anything
    that does not parse is an empty assignment: the bytes come from a client."""
    try:
        pos = 2
        (count,) = _I32.unpack_from(data, pos)
        pos += 4
        if count < 0 or count * 6 > len(data) - pos:
            return []
        out: list[dict[str, Any]] = []
        for _ in range(count):
            (n,) = _I16.unpack_from(data, pos)
            pos += 2
            if n < 0 or pos + n > len(data):
                return []
            topic = data[pos : pos + n].decode("utf-8")
            pos += n
            (k,) = _I32.unpack_from(data, pos)
            pos += 4
            if k < 0 or pos + 4 * k > len(data):
                return []
            parts = list(struct.unpack_from(f">{k}i", data, pos))
            pos += 4 * k
            out.append({"topic": topic, "partitions": sorted(parts)})
        return out
    except (struct.error, UnicodeDecodeError):
        return []


def _member(group: Group, m: Member) -> dict[str, Any]:
    consumer = group.protocol_type == "consumer"
    return {
        "member_id": m.member_id,
        "client_id": m.client_id,
        "client_host": m.client_host,
        "group_instance_id": m.instance_id,
        "assignment": decode_assignment(m.assignment) if consumer else [],
    }


class GroupsView:
    """Implements app.api.groups.GroupsSource over the broker's coordinator and storage."""

    def __init__(self, coordinator: GroupCoordinator, storage: Storage) -> None:
        self.coordinator = coordinator
        self.storage = storage

    def group_ids(self) -> list[str]:
        return sorted(g.group_id for g in self.coordinator.list_groups())

    def offsets(self, group_id: str) -> list[dict[str, Any]]:
        """Committed offsets of partitions that exist, with their lag: high watermark minus
        committed, never below 0 (a committed offset past the end, e.g. after the log was
        truncated or recreated, is no lag to alert on)."""
        rows = []
        for (topic, partition), c in sorted(self.coordinator.store.fetch_offsets(group_id).items()):
            try:
                plog = self.storage.log(topic, partition)
            except UnknownTopic:
                continue
            hw = plog.high_watermark
            rows.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "committed": c.offset,
                    "high_watermark": hw,
                    "log_start_offset": plog.log_start_offset,
                    "lag": max(hw - c.offset, 0),
                    "metadata": c.metadata,
                }
            )
        return rows

    def describe(self, group_id: str) -> dict[str, Any] | None:
        group = self.coordinator.describe(group_id)
        if group is None:
            return None
        return {
            "group": group.group_id,
            "state": group.state,
            "protocol_type": group.protocol_type or "",
            "protocol": group.protocol_name or "",
            "generation": group.generation,
            "members": [_member(group, m) for m in list(group.members.values())],
            "offsets": self.offsets(group_id),
        }

    def lags(self) -> list[tuple[str, str, int, int]]:
        """(group, topic, partition, lag) of every committed offset, for /metrics."""
        return [
            (g, o["topic"], o["partition"], o["lag"])
            for g in self.group_ids()
            for o in self.offsets(g)
        ]
