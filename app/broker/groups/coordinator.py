"""Group coordinator for the classic consumer-group protocol.

The state machine follows Apache Kafka's GroupCoordinator: Empty ->
PreparingRebalance -> CompletingRebalance -> Stable, with Dead for deleted
groups. JoinGroup and SyncGroup long-poll on futures, so a waiting member
never blocks the event loop or other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable

from .. import errors as e
from .model import (
    COMPLETING,
    DEAD,
    EMPTY,
    PREPARING,
    STABLE,
    Group,
    JoinResult,
    Member,
    SyncResult,
)
from .static import current_generation_result, keeps_assignment, replace_static_member
from .store import GroupStore
from .txn_offsets import TxnOffsetTable

log = logging.getLogger(__name__)

TICK_SECONDS = 0.05
RETENTION_CHECK_SECONDS = 60.0


class GroupCoordinator(TxnOffsetTable):
    def __init__(
        self,
        store: GroupStore,
        *,
        initial_rebalance_delay_ms: int = 300,
        min_session_ms: int = 6000,
        max_session_ms: int = 1_800_000,
        offsets_retention_ms: int = 7 * 24 * 3600 * 1000,
    ) -> None:
        super().__init__(store, offsets_retention_ms)
        self.initial_delay = initial_rebalance_delay_ms / 1000
        self.min_session_ms = min_session_ms
        self.max_session_ms = max_session_ms
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.load()
        self._task = asyncio.create_task(self._tick_loop(), name="group-coordinator")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for g in self.groups.values():
            for m in g.members.values():
                self._finish_join(m, JoinResult(e.NOT_COORDINATOR))
                self._finish_sync(m, SyncResult(e.NOT_COORDINATOR))

    async def _tick_loop(self) -> None:
        last_retention = time.monotonic()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self._tick()
                if time.monotonic() - last_retention > RETENTION_CHECK_SECONDS:
                    last_retention = time.monotonic()
                    self.expire_offsets(int(time.time() * 1000))
            except Exception:
                log.exception("group coordinator tick failed")

    def _tick(self) -> None:
        now = time.monotonic()
        for g in list(self.groups.values()):
            for member_id, expiry in list(g.pending.items()):
                if now > expiry:
                    del g.pending[member_id]
                    self._maybe_complete_join(g)
            for m in list(g.members.values()):
                # A member parked in JoinGroup/SyncGroup is alive by definition.
                if m.join_future is None and m.sync_future is None and now > m.deadline:
                    log.info("group %s: member %s session expired", g.group_id, m.member_id)
                    self._remove_member(g, m, e.UNKNOWN_MEMBER_ID)
            if g.state == PREPARING and now >= g.join_deadline:
                self._complete_join(g)

    # -- JoinGroup -------------------------------------------------------------------

    async def join(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        client_id: str,
        client_host: str,
        session_ms: int,
        rebalance_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        require_known_member_id: bool,
        version: int,
    ) -> JoinResult:
        if not group_id:
            return JoinResult(e.INVALID_GROUP_ID, member_id)
        if not self.min_session_ms <= session_ms <= self.max_session_ms:
            return JoinResult(e.INVALID_SESSION_TIMEOUT, member_id)
        group = self.groups.get(group_id)
        if group is None or group.state == DEAD:
            if member_id:
                return JoinResult(e.UNKNOWN_MEMBER_ID, member_id)
            group = self.groups[group_id] = Group(group_id)
        if not group.supports(protocol_type, protocols):
            return JoinResult(e.INCONSISTENT_GROUP_PROTOCOL, member_id)
        member = Member(
            member_id, instance_id, client_id, client_host, session_ms, rebalance_ms,
            protocol_type, protocols, join_version=version,
        )  # fmt: skip
        if not member_id:
            return await self._join_unknown(group, member, require_known_member_id)
        return await self._join_known(group, member)

    async def _join_unknown(
        self, group: Group, new: Member, require_known_member_id: bool
    ) -> JoinResult:
        new.member_id = f"{new.client_id or 'member'}-{uuid.uuid4()}"
        existing = group.member_by_instance(new.instance_id)
        if existing is not None:
            return await self._rejoin_static(group, existing, new)
        if new.instance_id is None and require_known_member_id:
            # KIP-394: the client must come back with this id, so a client that
            # dies between the two requests never holds a slot in the group.
            group.pending[new.member_id] = time.monotonic() + new.session_ms / 1000
            return JoinResult(e.MEMBER_ID_REQUIRED, new.member_id)
        return await self._add_and_wait(group, new)

    async def _join_known(self, group: Group, req: Member) -> JoinResult:
        member_id = req.member_id
        if member_id in group.pending:
            del group.pending[member_id]
            return await self._add_and_wait(group, req)
        member = group.members.get(member_id)
        if req.instance_id is not None:
            known = group.static.get(req.instance_id)
            if known is not None and known != member_id:
                return JoinResult(e.FENCED_INSTANCE_ID, member_id)
        if member is None:
            return JoinResult(e.UNKNOWN_MEMBER_ID, member_id)
        changed = member.protocols != req.protocols
        member.protocols = req.protocols
        member.session_ms, member.rebalance_ms = req.session_ms, req.rebalance_ms
        member.join_version = req.join_version
        if group.state == PREPARING:
            return await self._wait_join(group, member)
        if group.state == COMPLETING and not changed:
            # The member lost our response: give it the same generation again.
            return group.join_result(member)
        if group.state == STABLE and not changed and member.member_id != group.leader_id:
            return group.join_result(member)
        self._prepare_rebalance(group, f"member {member_id} rejoined")
        return await self._wait_join(group, member)

    async def _rejoin_static(self, group: Group, old: Member, new: Member) -> JoinResult:
        """A static member came back under a new member id: fence the old id."""
        self._finish_join(old, JoinResult(e.FENCED_INSTANCE_ID, old.member_id))
        self._finish_sync(old, SyncResult(e.FENCED_INSTANCE_ID))
        old_leader = group.leader_id
        replace_static_member(group, old, new)
        new.touch()
        if keeps_assignment(group, old, new):
            # The member's SyncGroup returns its old assignment.
            self._persist(group)
            return current_generation_result(group, new, old_leader)
        if group.state != PREPARING:
            self._prepare_rebalance(group, f"static member {new.instance_id} rejoined")
        return await self._wait_join(group, new)

    async def _add_and_wait(self, group: Group, member: Member) -> JoinResult:
        group.members[member.member_id] = member
        if member.instance_id is not None:
            group.static[member.instance_id] = member.member_id
        member.touch()
        if group.state == PREPARING and group.initial_join:
            # Give members starting together a moment so they share one rebalance.
            cap = time.monotonic() + group.rebalance_timeout()
            group.join_deadline = min(
                cap, max(group.join_deadline, time.monotonic() + self.initial_delay)
            )
        elif group.state != PREPARING:
            self._prepare_rebalance(group, f"member {member.member_id} joined")
        return await self._wait_join(group, member)

    async def _wait_join(self, group: Group, member: Member) -> JoinResult:
        # A duplicate JoinGroup replaces the earlier one, which gets an error.
        self._finish_join(member, JoinResult(e.REBALANCE_IN_PROGRESS, member.member_id))
        fut: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        member.join_future = fut
        self._maybe_complete_join(group)
        try:
            return await fut
        finally:
            if member.join_future is fut:
                member.join_future = None

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        for m in group.members.values():
            # A member waiting for its assignment must rejoin instead.
            self._finish_sync(m, SyncResult(e.REBALANCE_IN_PROGRESS))
        was_empty = group.state == EMPTY
        group.state = PREPARING
        now = time.monotonic()
        timeout = group.rebalance_timeout()
        group.initial_join = was_empty
        group.join_deadline = now + (min(self.initial_delay, timeout) if was_empty else timeout)
        log.info("group %s: preparing rebalance (%s)", group.group_id, reason)

    def _maybe_complete_join(self, group: Group) -> None:
        if group.state == PREPARING and not group.initial_join and group.all_joined():
            self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        joined = [m for m in group.members.values() if m.join_future is not None]
        for m in list(group.members.values()):
            # A static member that did not rejoin keeps its place (and is assigned
            # partitions) until its session expires, as in Kafka: it may be restarting.
            if m.join_future is None and m.instance_id is None:
                log.info("group %s: member %s did not rejoin", group.group_id, m.member_id)
                self._drop_member(group, m)
        if group.members and not joined:
            # Only static members that have not rejoined: no one could lead the next
            # generation, so wait another rebalance timeout for them or their expiry.
            group.join_deadline = time.monotonic() + group.rebalance_timeout()
            return
        # Pending ids stay valid: their owners are between MEMBER_ID_REQUIRED and
        # the JoinGroup that uses the id, and join the next generation.
        group.initial_join = False
        group.generation += 1
        if not group.members:
            self._become_empty(group)
            return
        group.protocol_name = group.select_protocol()
        group.protocol_type = next(iter(group.members.values())).protocol_type
        if group.leader_id not in {m.member_id for m in joined}:
            group.leader_id = joined[0].member_id
        group.state = COMPLETING
        log.info(
            "group %s: generation %d with %d members",
            group.group_id,
            group.generation,
            len(group.members),
        )
        for m in group.members.values():
            m.touch()
            self._finish_join(m, group.join_result(m))

    # -- SyncGroup / Heartbeat / LeaveGroup ------------------------------------------

    async def sync(
        self,
        group_id: str,
        generation: int,
        member_id: str,
        instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: dict[str, bytes],
    ) -> SyncResult:
        group = self.groups.get(group_id)
        code, member = self._check_member(group, generation, member_id, instance_id)
        if code != e.NONE or member is None or group is None:
            return SyncResult(code)
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return SyncResult(e.INCONSISTENT_GROUP_PROTOCOL)
        if group.state == PREPARING:
            return SyncResult(e.REBALANCE_IN_PROGRESS)
        member.touch()
        if group.state == STABLE:
            return self._sync_result(group, member)
        if group.state != COMPLETING:
            return SyncResult(e.UNKNOWN_MEMBER_ID)
        fut: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        self._finish_sync(member, SyncResult(e.REBALANCE_IN_PROGRESS))
        member.sync_future = fut
        if member_id == group.leader_id:
            for m in group.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            group.state = STABLE
            self._persist(group)
            for m in group.members.values():
                self._finish_sync(m, self._sync_result(group, m))
        try:
            return await fut
        finally:
            if member.sync_future is fut:
                member.sync_future = None

    @staticmethod
    def _sync_result(group: Group, member: Member) -> SyncResult:
        return SyncResult(e.NONE, member.assignment, group.protocol_type, group.protocol_name)

    def heartbeat(
        self, group_id: str, generation: int, member_id: str, instance_id: str | None
    ) -> int:
        group = self.groups.get(group_id)
        code, member = self._check_member(group, generation, member_id, instance_id)
        if member is not None and code in (e.NONE, e.ILLEGAL_GENERATION):
            member.touch()
        if code != e.NONE or group is None:
            return code
        if group.state == PREPARING:
            return e.REBALANCE_IN_PROGRESS
        return e.NONE

    def leave(
        self, group_id: str, members: Iterable[tuple[str, str | None]]
    ) -> tuple[int, list[tuple[str, str | None, int]]]:
        group = self.groups.get(group_id)
        if group is None or group.state == DEAD:
            return e.UNKNOWN_MEMBER_ID, []
        results: list[tuple[str, str | None, int]] = []
        for member_id, instance_id in members:
            member = group.member_by_instance(instance_id) if instance_id else None
            if instance_id and member is None:
                results.append((member_id, instance_id, e.UNKNOWN_MEMBER_ID))
                continue
            if member is not None and member_id and member.member_id != member_id:
                results.append((member_id, instance_id, e.FENCED_INSTANCE_ID))
                continue
            if member is None:
                member = group.members.get(member_id)
            if member is None:
                code = e.UNKNOWN_MEMBER_ID if member_id not in group.pending else e.NONE
                if group.pending.pop(member_id, None) is not None:
                    # The join phase may have been waiting for this id only.
                    self._maybe_complete_join(group)
                results.append((member_id, instance_id, code))
                continue
            log.info("group %s: member %s left", group_id, member.member_id)
            self._remove_member(group, member, e.UNKNOWN_MEMBER_ID)
            results.append((member.member_id, instance_id, e.NONE))
        return e.NONE, results

    def _remove_member(self, group: Group, member: Member, code: int) -> None:
        self._finish_join(member, JoinResult(code, member.member_id))
        self._finish_sync(member, SyncResult(code))
        self._drop_member(group, member)
        if group.state in (STABLE, COMPLETING):
            self._prepare_rebalance(group, f"member {member.member_id} left")
        if group.state == PREPARING:
            if group.members or group.pending:
                self._maybe_complete_join(group)
            else:
                self._complete_join(group)

    @staticmethod
    def _drop_member(group: Group, member: Member) -> None:
        group.members.pop(member.member_id, None)
        if member.instance_id is not None and group.static.get(member.instance_id) == (
            member.member_id
        ):
            del group.static[member.instance_id]

    def _become_empty(self, group: Group) -> None:
        group.state = EMPTY
        group.leader_id = None
        group.protocol_name = None
        group.empty_since_ms = int(time.time() * 1000)
        self._persist(group)
        log.info("group %s: empty (generation %d)", group.group_id, group.generation)

    # A member awaits its answer from the request until the answer is decided, not until
    # its handler resumes: in between it must not count as joined for the next phase.

    @staticmethod
    def _finish_join(member: Member, result: JoinResult) -> None:
        fut, member.join_future = member.join_future, None
        if fut is not None and not fut.done():
            fut.set_result(result)

    @staticmethod
    def _finish_sync(member: Member, result: SyncResult) -> None:
        fut, member.sync_future = member.sync_future, None
        if fut is not None and not fut.done():
            fut.set_result(result)
