"""Hostile values in the admin APIs (issue 12, point 7): partition counts, replication
factors and assignments, duplicate and null names, transactional ids, coordinator types,
committed offsets of partitions that do not exist. Each gets Kafka's error code and the
connection keeps serving; nothing is half created."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Server, unique_topic
from .rawkafka import RawKafka, ms, request_class, schema
from .test_hostile_inputs import (
    NONE,
    UNKNOWN_TOPIC_OR_PARTITION,
    assert_serving,
    create_topic,
    topic_meta,
)

UNKNOWN_TOPIC_ID = 100
INVALID_TOPIC_EXCEPTION = 17
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_REQUEST = 42
POLICY_VIOLATION = 44
INVALID_TRANSACTION_TIMEOUT = 50
INT32_MAX = 2**31 - 1
# The partitions one request may create, as KRaft's controller limits records per operation.
MAX_PARTITIONS = 10_000
NODE = 1


def _creatable(name: str, partitions: int = 1, rf: int = 1, assignments: Any = ()) -> Any:
    mod = schema(19, 7)
    return mod.CreatableTopic(
        name=name,
        num_partitions=partitions,
        replication_factor=rf,
        assignments=tuple(
            mod.CreatableReplicaAssignment(partition_index=i, broker_ids=tuple(b))
            for i, b in assignments
        ),
        configs=(),
    )


def _create(raw: RawKafka, *topics: Any, validate_only: bool = False) -> list[tuple[int, str]]:
    resp = raw.request(
        request_class(19, 7)(topics=topics, timeout=ms(10_000), validate_only=validate_only)
    )
    return [(int(t.error_code), t.error_message or "") for t in resp.topics]


def _exists(raw: RawKafka, topic: str) -> int | None:
    """The partition count of a topic, None when it does not exist."""
    (t,) = raw.metadata([topic]).topics
    return len(t.partitions) if t.error_code == NONE else None


@pytest.mark.parametrize(
    ("partitions", "rf", "code"),
    [
        (INT32_MAX, 1, POLICY_VIOLATION),
        (MAX_PARTITIONS + 1, -1, POLICY_VIOLATION),
        (0, 1, INVALID_PARTITIONS),
        (-2, 1, INVALID_PARTITIONS),
        (-(2**31), 1, INVALID_PARTITIONS),
        (1, 0, INVALID_REPLICATION_FACTOR),
        (1, -2, INVALID_REPLICATION_FACTOR),
        (1, 3, INVALID_REPLICATION_FACTOR),
        (1, 2**15 - 1, INVALID_REPLICATION_FACTOR),
    ],
)
def test_create_topics_counts(server: Server, partitions: int, rf: int, code: int) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = unique_topic("count")
        for validate_only in (True, False):
            ((got, message),) = _create(
                raw, _creatable(topic, partitions, rf), validate_only=validate_only
            )
            assert got == code, message
            assert message
        assert _exists(raw, topic) is None
        assert_serving(raw)


@pytest.mark.parametrize(
    ("partitions", "rf", "assignments", "code"),
    [
        (2, -1, [(0, [NODE]), (1, [NODE])], INVALID_REQUEST),
        (-1, 1, [(0, [NODE])], INVALID_REQUEST),
        (-1, -1, [(0, [])], INVALID_REPLICA_ASSIGNMENT),
        (-1, -1, [(0, [99])], INVALID_REPLICA_ASSIGNMENT),
        (-1, -1, [(0, [NODE, NODE])], INVALID_REPLICA_ASSIGNMENT),
        (-1, -1, [(0, [NODE]), (0, [NODE])], INVALID_REPLICA_ASSIGNMENT),
        (-1, -1, [(0, [NODE]), (5, [NODE])], INVALID_REPLICA_ASSIGNMENT),
        (-1, -1, [(-1, [NODE])], INVALID_REPLICA_ASSIGNMENT),
        (-1, -1, [(INT32_MAX, [NODE])], INVALID_REPLICA_ASSIGNMENT),
    ],
)
def test_create_topics_assignments(
    server: Server, partitions: int, rf: int, assignments: Any, code: int
) -> None:
    """As KRaft's ReplicationControlManager.createTopic checks them."""
    with RawKafka(server.bootstrap) as raw:
        topic = unique_topic("assign")
        ((got, message),) = _create(raw, _creatable(topic, partitions, rf, assignments))
        assert got == code, message
        assert _exists(raw, topic) is None
        assert_serving(raw)


def test_create_topics_assignments_in_any_order(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = unique_topic("assign")
        assert _create(raw, _creatable(topic, -1, -1, [(1, [NODE]), (0, [NODE])])) == [(NONE, "")]
        assert _exists(raw, topic) == 2


def test_create_topics_duplicate_and_invalid_names(server: Server) -> None:
    """Every entry of a name listed twice is INVALID_REQUEST and nothing is created."""
    with RawKafka(server.bootstrap) as raw:
        dup, fine = unique_topic("dup"), unique_topic("fine")
        got = _create(raw, _creatable(dup), _creatable(fine), _creatable(dup))
        assert [c for c, _ in got] == [INVALID_REQUEST, NONE, INVALID_REQUEST]
        assert _exists(raw, dup) is None and _exists(raw, fine) == 1
        bad = ["", "..", "a" * 250, "x" * 32_767, "bad/name"]
        got = _create(raw, *(_creatable(n) for n in bad))
        assert [c for c, _ in got] == [INVALID_TOPIC_EXCEPTION] * len(bad)
        assert_serving(raw)


def _create_partitions(raw: RawKafka, *topics: tuple[str, int, Any]) -> list[tuple[int, str]]:
    cp = schema(37, 3)
    body = request_class(37, 3)(
        topics=tuple(
            cp.CreatePartitionsTopic(
                name=name,
                count=count,
                assignments=None
                if assignments is None
                else tuple(cp.CreatePartitionsAssignment(broker_ids=tuple(b)) for b in assignments),
            )
            for name, count, assignments in topics
        ),
        timeout=ms(5000),
        validate_only=False,
    )
    return [(int(r.error_code), r.error_message or "") for r in raw.request(body).results]


def test_create_partitions_counts(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw, 2)
        cases = [
            ((topic, INT32_MAX, None), POLICY_VIOLATION),
            ((topic, MAX_PARTITIONS + 1, None), POLICY_VIOLATION),
            ((topic, 2, None), INVALID_PARTITIONS),
            ((topic, -1, None), INVALID_PARTITIONS),
            ((topic, -(2**31), None), INVALID_PARTITIONS),
            ((topic, 3, [[NODE], [NODE]]), INVALID_REPLICA_ASSIGNMENT),
            ((topic, 3, [[]]), INVALID_REPLICA_ASSIGNMENT),
            ((topic, 3, [[NODE, NODE]]), INVALID_REPLICA_ASSIGNMENT),
            ((unique_topic("missing"), 3, None), UNKNOWN_TOPIC_OR_PARTITION),
            (("", 3, None), UNKNOWN_TOPIC_OR_PARTITION),
        ]
        for entry, code in cases:
            ((got, message),) = _create_partitions(raw, entry)
            assert got == code, (entry[1:], message)
        assert _exists(raw, topic) == 2
        assert _create_partitions(raw, (topic, 3, [[NODE]])) == [(NONE, "")]
        assert _exists(raw, topic) == 3
        assert_serving(raw)


def test_create_partitions_many_duplicates_answer_quickly(server: Server) -> None:
    with RawKafka(server.bootstrap, timeout=10) as raw:
        topic = create_topic(raw)
        got = _create_partitions(raw, *[(topic, 2, None)] * 50_000)
        assert {c for c, _ in got} == {INVALID_REQUEST}
        assert _exists(raw, topic) == 1
        assert_serving(raw)


def _delete_topics(raw: RawKafka, entries: list[tuple[str | None, uuid.UUID]]) -> list[Any]:
    mod = schema(20, 6)
    resp = raw.request(
        request_class(20, 6)(
            topics=tuple(mod.DeleteTopicState(name=n, topic_id=i) for n, i in entries),
            timeout=ms(5000),
        )
    )
    return sorted((r.name or "", int(r.error_code)) for r in resp.responses)


def test_delete_topics_names_ids_and_duplicates(server: Server) -> None:
    """As KRaft's ControllerApis.deleteTopics: neither or both of name and id, and a name
    or id listed twice, are INVALID_REQUEST, and such a topic stays."""
    zero = uuid.UUID(int=0)
    with RawKafka(server.bootstrap) as raw:
        a, b, c = (create_topic(raw) for _ in range(3))
        meta_b = topic_meta(raw, b)
        got = _delete_topics(
            raw,
            [(None, zero), (a, meta_b.topic_id), (b, zero), (b, zero), (c, zero)],
        )
        assert got == sorted(
            [("", INVALID_REQUEST), (a, INVALID_REQUEST), (b, INVALID_REQUEST), (c, NONE)]
        )
        assert _exists(raw, a) == 1 and _exists(raw, b) == 1 and _exists(raw, c) is None
        got = _delete_topics(raw, [(None, meta_b.topic_id), (None, meta_b.topic_id)])
        assert [code for _, code in got] == [INVALID_REQUEST]
        assert _exists(raw, b) == 1
        got = _delete_topics(raw, [(None, uuid.uuid4())])
        assert [code for _, code in got] == [UNKNOWN_TOPIC_ID]
        # v5 and older name topics only.
        resp = raw.request(request_class(20, 5)(topic_names=(a, a, ""), timeout=ms(5000)))
        got = sorted((r.name, int(r.error_code)) for r in resp.responses)
        assert got == [("", UNKNOWN_TOPIC_OR_PARTITION), (a, INVALID_REQUEST)]
        assert _exists(raw, a) == 1
        assert_serving(raw)


def test_init_producer_id_transactional_inputs(server: Server) -> None:
    """TransactionCoordinator.handleInitProducerId: an empty transactional id is
    INVALID_REQUEST; a timeout outside (0, transaction.max.timeout.ms] is
    INVALID_TRANSACTION_TIMEOUT. Without a transactional id the timeout is not used."""
    with RawKafka(server.bootstrap) as raw:
        cls = request_class(22, 1)
        cases = [
            ("", 60_000, INVALID_REQUEST),
            ("txn", 0, INVALID_TRANSACTION_TIMEOUT),
            ("txn", -1, INVALID_TRANSACTION_TIMEOUT),
            ("txn", 900_001, INVALID_TRANSACTION_TIMEOUT),
            (None, -1, NONE),
            (None, INT32_MAX, NONE),
        ]
        for txn, timeout, code in cases:
            resp = raw.request(cls(transactional_id=txn, transaction_timeout=ms(timeout)))
            assert int(resp.error_code) == code, (txn, timeout)
            if code != NONE:
                assert (resp.producer_id, resp.producer_epoch) == (-1, -1)
        assert_serving(raw)


def test_find_coordinator_unknown_key_type(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        for key_type in (2, 5, -1):
            resp = raw.request(request_class(10, 3)(key="g", key_type=key_type))
            assert (int(resp.error_code), resp.node_id) == (INVALID_REQUEST, -1)
            resp = raw.request(request_class(10, 4)(key_type=key_type, coordinator_keys=("g",)))
            assert [(int(c.error_code), c.node_id) for c in resp.coordinators] == [
                (INVALID_REQUEST, -1)
            ]
        resp = raw.request(request_class(10, 4)(key_type=1, coordinator_keys=("t", "")))
        assert [int(c.error_code) for c in resp.coordinators] == [NONE, NONE]
        assert_serving(raw)


def test_committed_offsets_of_missing_partitions(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = create_topic(raw)
        group = unique_topic("grp")
        oc = schema(8, 8)
        parts = (-1, 0, INT32_MAX)
        resp = raw.request(
            request_class(8, 8)(
                group_id=group,
                generation_id_or_member_epoch=-1,
                member_id="",
                group_instance_id=None,
                topics=(
                    oc.OffsetCommitRequestTopic(
                        name=topic,
                        partitions=tuple(
                            oc.OffsetCommitRequestPartition(
                                partition_index=p,
                                committed_offset=-5,
                                committed_leader_epoch=-1,
                                committed_metadata=None,
                            )
                            for p in parts
                        ),
                    ),
                ),
            )
        )
        got = [int(p.error_code) for t in resp.topics for p in t.partitions]
        assert got == [UNKNOWN_TOPIC_OR_PARTITION, NONE, UNKNOWN_TOPIC_OR_PARTITION]
        of = schema(9, 7)
        resp = raw.request(
            request_class(9, 7)(
                group_id=group,
                topics=(of.OffsetFetchRequestTopic(name=topic, partition_indexes=parts),),
                require_stable=False,
            )
        )
        got = [(p.committed_offset, int(p.error_code)) for t in resp.topics for p in t.partitions]
        assert got == [(-1, NONE), (-5, NONE), (-1, NONE)]
        od = schema(47, 0)
        resp = raw.request(
            request_class(47, 0)(
                group_id=group,
                topics=(
                    od.OffsetDeleteRequestTopic(
                        name=topic,
                        partitions=tuple(
                            od.OffsetDeleteRequestPartition(partition_index=p) for p in parts
                        ),
                    ),
                    od.OffsetDeleteRequestTopic(
                        name=unique_topic("missing"),
                        partitions=(od.OffsetDeleteRequestPartition(partition_index=0),),
                    ),
                ),
            )
        )
        assert resp.error_code == NONE
        got = [int(p.error_code) for t in resp.topics for p in t.partitions]
        missing = UNKNOWN_TOPIC_OR_PARTITION
        assert got == [missing, NONE, missing, missing]
        assert_serving(raw)


# --------------------------------------------------------------------------- partition budget

FD_LIMIT = 256
# Half the open-file limit: every partition holds its active WAL segment open.
BUDGET = FD_LIMIT // 2
_LIMITED = (
    "import resource, runpy, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT})); "
    "sys.argv[0] = 'app'; runpy.run_module('app', run_name='__main__', alter_sys=True)"
)


class _FewFilesServer(Server):
    def command(self) -> list[str]:
        cmd = super().command()
        return [sys.executable, "-c", _LIMITED, *cmd[3:]]


@pytest.fixture(scope="module")
def few_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _FewFilesServer(tmp_path_factory.mktemp("fewfiles"), ["--index-workers", "0"])
    try:
        yield srv.start()
    finally:
        srv.kill()


def test_partitions_beyond_the_open_file_budget_are_refused(few_files: Server) -> None:
    """A topic whose partitions would exhaust the broker's file descriptors used to be
    recorded in full and then fail half-way (EMFILE), leaving a topic that also kept the
    broker from starting again."""
    with RawKafka(few_files.bootstrap) as raw:
        big = create_topic(raw, BUDGET - 10)
        ((code, message),) = _create(raw, _creatable(unique_topic("over"), 20))
        assert code == POLICY_VIOLATION and str(BUDGET) in message
        assert _create_partitions(raw, (big, BUDGET + 1, None))[0][0] == POLICY_VIOLATION
        assert _exists(raw, big) == BUDGET - 10
        names = [unique_topic("auto") for _ in range(12)]
        resp = raw.metadata(names, auto_create=True)
        codes = [int(t.error_code) for t in resp.topics]
        assert codes == [NONE] * 10 + [POLICY_VIOLATION] * 2
        assert_serving(raw)
    few_files.restart()
    with RawKafka(few_files.bootstrap) as raw:
        assert _exists(raw, big) == BUDGET - 10
