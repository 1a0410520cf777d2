"""Consumer-group members and groups: state that the coordinator mutates."""

from __future__ import annotations

import asyncio
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..errors import NONE

EMPTY = "Empty"
PREPARING = "PreparingRebalance"
COMPLETING = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"
STATES = (EMPTY, PREPARING, COMPLETING, STABLE, DEAD)


@dataclass(slots=True)
class JoinResult:
    error: int
    member_id: str = ""
    generation: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    skip_assignment: bool = False
    # Only the leader receives the members and their subscription metadata.
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class SyncResult:
    error: int
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


@dataclass(eq=False, slots=True)
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_ms: int
    rebalance_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    deadline: float = 0.0
    join_future: asyncio.Future[JoinResult] | None = None
    sync_future: asyncio.Future[SyncResult] | None = None
    join_version: int = 0

    def touch(self) -> None:
        self.deadline = time.monotonic() + self.session_ms / 1000

    def metadata_for(self, protocol: str | None) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def vote(self, candidates: set[str]) -> str:
        return next(name for name, _ in self.protocols if name in candidates)

    def to_json(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "instance_id": self.instance_id,
            "client_id": self.client_id,
            "client_host": self.client_host,
            "session_ms": self.session_ms,
            "rebalance_ms": self.rebalance_ms,
            "protocol_type": self.protocol_type,
            "protocols": [[n, m.hex()] for n, m in self.protocols],
            "assignment": self.assignment.hex(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Member:
        return cls(
            member_id=d["member_id"],
            instance_id=d["instance_id"],
            client_id=d["client_id"],
            client_host=d["client_host"],
            session_ms=d["session_ms"],
            rebalance_ms=d["rebalance_ms"],
            protocol_type=d["protocol_type"],
            protocols=[(n, bytes.fromhex(m)) for n, m in d["protocols"]],
            assignment=bytes.fromhex(d["assignment"]),
        )


@dataclass(eq=False)
class Group:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    # Member ids handed out with MEMBER_ID_REQUIRED, until they join or expire.
    pending: dict[str, float] = field(default_factory=dict)
    join_deadline: float = 0.0
    initial_join: bool = False
    empty_since_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def candidate_protocols(self) -> set[str]:
        sets = [set(m.protocol_names()) for m in self.members.values()]
        return set.intersection(*sets) if sets else set()

    def supports(self, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        if not self.members:
            return bool(protocol_type) and bool(protocols)
        # Members, not group.protocol_type: that is only set once a join completes.
        if any(m.protocol_type != protocol_type for m in self.members.values()):
            return False
        return bool(self.candidate_protocols() & {name for name, _ in protocols})

    def select_protocol(self) -> str:
        candidates = self.candidate_protocols()
        votes = Counter(m.vote(candidates) for m in self.members.values())
        return votes.most_common(1)[0][0]

    def all_joined(self) -> bool:
        """Kafka's hasAllMembersJoined: every member awaits its JoinGroup answer, and no
        member id handed out with MEMBER_ID_REQUIRED is still to come back."""
        return not self.pending and all(m.join_future is not None for m in self.members.values())

    def join_result(self, member: Member) -> JoinResult:
        result = JoinResult(
            NONE,
            member.member_id,
            self.generation,
            self.protocol_type,
            self.protocol_name,
            self.leader_id or "",
        )
        if member.member_id == self.leader_id:
            result.members = [
                (m.member_id, m.instance_id, m.metadata_for(self.protocol_name))
                for m in self.members.values()
            ]
        return result

    def rebalance_timeout(self) -> float:
        """Seconds a join phase waits for members to rejoin: the longest any member asked."""
        return max((m.rebalance_ms for m in self.members.values()), default=0) / 1000

    def member_by_instance(self, instance_id: str | None) -> Member | None:
        if instance_id is None:
            return None
        member_id = self.static.get(instance_id)
        return self.members.get(member_id) if member_id is not None else None

    def subscribed_topics(self) -> set[str]:
        """Topics named in the members' consumer-protocol subscriptions."""
        if self.protocol_type != "consumer":
            return set()
        topics: set[str] = set()
        for m in self.members.values():
            topics |= parse_subscription_topics(m.metadata_for(self.protocol_name))
        return topics

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "generation": self.generation,
            "protocol_type": self.protocol_type,
            "protocol_name": self.protocol_name,
            "leader_id": self.leader_id,
            "members": [m.to_json() for m in self.members.values()],
            "empty_since_ms": self.empty_since_ms,
        }

    @classmethod
    def from_json(cls, group_id: str, d: dict[str, Any]) -> Group:
        g = cls(
            group_id,
            generation=d["generation"],
            protocol_type=d["protocol_type"],
            protocol_name=d["protocol_name"],
            leader_id=d["leader_id"],
            empty_since_ms=d.get("empty_since_ms", int(time.time() * 1000)),
        )
        for md in d["members"]:
            m = Member.from_json(md)
            m.touch()
            g.members[m.member_id] = m
            if m.instance_id is not None:
                g.static[m.instance_id] = m.member_id
        # Members keep heartbeating across a broker restart; those that do not
        # are expired by their session timeout like any other.
        g.state = STABLE if g.members else EMPTY
        return g


def parse_subscription_topics(metadata: bytes) -> set[str]:
    """Topic names from a ConsumerProtocolSubscription (every version starts the same)."""
    try:
        pos = 2
        (count,) = struct.unpack_from(">i", metadata, pos)
        pos += 4
        topics = set()
        for _ in range(max(count, 0)):
            (n,) = struct.unpack_from(">h", metadata, pos)
            pos += 2
            topics.add(metadata[pos : pos + n].decode("utf-8", "replace"))
            pos += n
        return topics
    except struct.error:
        return set()
