"""The groups this broker coordinates and what needs no rebalance: loading and saving them,
whether a member may commit, describing, listing and deleting groups, offset retention."""

from __future__ import annotations

import logging

from .. import errors as e
from .model import COMPLETING, DEAD, EMPTY, Group, Member
from .store import GroupStore

log = logging.getLogger(__name__)


class GroupTable:
    def __init__(self, store: GroupStore, offsets_retention_ms: int) -> None:
        self.store = store
        self.offsets_retention_ms = offsets_retention_ms
        self.groups: dict[str, Group] = {}

    def load(self) -> None:
        for group_id, state in self.store.load_groups().items():
            self.groups[group_id] = Group.from_json(group_id, state)
        for group_id in self.store.groups_with_offsets():
            self.groups.setdefault(group_id, Group(group_id))

    def _persist(self, group: Group) -> None:
        try:
            self.store.save_group(group.group_id, group.to_json())
        except Exception:
            log.exception("saving group %s failed", group.group_id)

    def _check_member(
        self, group: Group | None, generation: int, member_id: str, instance_id: str | None
    ) -> tuple[int, Member | None]:
        if group is None or group.state == DEAD:
            return e.UNKNOWN_MEMBER_ID, None
        if instance_id is not None:
            known = group.static.get(instance_id)
            if known is not None and known != member_id:
                return e.FENCED_INSTANCE_ID, None
        member = group.members.get(member_id)
        if member is None:
            return e.UNKNOWN_MEMBER_ID, None
        if generation != group.generation:
            return e.ILLEGAL_GENERATION, member
        return e.NONE, member

    def check_commit(
        self, group_id: str, generation: int, member_id: str, instance_id: str | None
    ) -> int:
        """Whether a member (or a simple consumer, generation < 0) may commit now."""
        group = self.groups.get(group_id)
        if group is None or group.state == DEAD:
            if generation < 0:
                self.groups[group_id] = Group(group_id)
                return e.NONE
            return e.UNKNOWN_MEMBER_ID
        if generation < 0 and group.state == EMPTY:
            return e.NONE
        code, member = self._check_member(group, generation, member_id, instance_id)
        if code != e.NONE:
            return code
        if member is not None:
            member.touch()
        if group.state == COMPLETING:
            return e.REBALANCE_IN_PROGRESS
        return e.NONE

    def describe(self, group_id: str) -> Group | None:
        group = self.groups.get(group_id)
        return group if group is not None and group.state != DEAD else None

    def list_groups(self, states: set[str] | None = None) -> list[Group]:
        return [
            g
            for g in self.groups.values()
            if g.state != DEAD and (not states or g.state.lower() in states)
        ]

    def delete_group(self, group_id: str) -> int:
        group = self.groups.get(group_id)
        if group is None or group.state == DEAD:
            return e.GROUP_ID_NOT_FOUND
        if group.state != EMPTY:
            return e.NON_EMPTY_GROUP
        group.state = DEAD
        del self.groups[group_id]
        self.store.delete_offsets(group_id, None)
        self.store.save_group(group_id, None)
        log.info("group %s deleted", group_id)
        return e.NONE

    def expire_offsets(self, now_ms: int) -> None:
        """offsets.retention: an empty group's offsets go once it has been idle that long;
        pending transactional ones stay until their transaction ends."""
        for group in list(self.groups.values()):
            if group.state != EMPTY:
                continue
            offsets = self.store.fetch_offsets(group.group_id)
            last = max([group.empty_since_ms, *(o.commit_ms for o in offsets.values())])
            if now_ms - last <= self.offsets_retention_ms:
                continue
            if self.store.pending_txn_partitions(group.group_id):
                # An open transaction's offsets never expire, and keep their group (Kafka's
                # GroupMetadata.hasOffsets counts them).
                if offsets:
                    log.info("group %s: committed offsets expired", group.group_id)
                    self.store.delete_offsets(group.group_id, None, pending=False)
                continue
            log.info("group %s: offsets expired", group.group_id)
            self.store.delete_offsets(group.group_id, None)
            self.store.save_group(group.group_id, None)
            del self.groups[group.group_id]
