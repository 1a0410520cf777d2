"""Static membership (KIP-345): a member that comes back with its group.instance.id but
without a member id takes over the place of the member id that instance had.

As in Kafka's GroupCoordinator, the old member id is fenced, the new one inherits its
assignment (and its leadership), and a Stable group is not rebalanced unless the
rejoin changes what the group would assign.
"""

from __future__ import annotations

from .model import STABLE, Group, JoinResult, Member, parse_subscription_topics

# From this JoinGroup version a leader can be told to skip running its assignor.
SKIP_ASSIGNMENT_FROM = 9


def replace_static_member(group: Group, old: Member, new: Member) -> None:
    del group.members[old.member_id]
    new.assignment = old.assignment
    group.members[new.member_id] = new
    assert new.instance_id is not None
    group.static[new.instance_id] = new.member_id
    if group.leader_id == old.member_id:
        group.leader_id = new.member_id


def keeps_assignment(group: Group, old: Member, new: Member) -> bool:
    """Whether the rejoin leaves the current generation's assignment valid.

    Kafka only checks that the group's protocol would stay the same. A consumer's
    subscribed topics are compared as well, since an assignment made for other topics
    is wrong; the rest of its metadata (owned partitions, generation, user data) differs
    after every restart and says nothing about the assignment.
    """
    if group.state != STABLE or group.select_protocol() != group.protocol_name:
        return False
    before, after = old.metadata_for(group.protocol_name), new.metadata_for(group.protocol_name)
    if group.protocol_type == "consumer":
        return parse_subscription_topics(before) == parse_subscription_topics(after)
    return before == after


def current_generation_result(group: Group, member: Member, old_leader: str | None) -> JoinResult:
    """The JoinGroup answer for a static member that keeps its assignment.

    A leader must not run its assignor: a Stable group would not hand out the result.
    From v9 it is told so with skipAssignment; before that Kafka names the previous
    leader id, so that the member sees itself as a follower and just syncs.
    """
    result = group.join_result(member)
    if member.member_id == group.leader_id:
        if member.join_version >= SKIP_ASSIGNMENT_FROM:
            result.skip_assignment = True
        else:
            result.leader = old_leader or ""
            result.members = []
    return result
