"""An unexpected exception inside one request's handler costs the client that request, with
an error code, and never its connection (issue 12, point 7)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from .conftest import Server, unique_topic
from .rawkafka import RawKafka, Rec, build_batch, ms, request_class, schema

HERE = Path(__file__).resolve().parent


class FailingHandlerServer(Server):
    def command(self) -> list[str]:
        cmd = super().command()
        return [sys.executable, str(HERE / "failing_handler_main.py"), *cmd[3:]]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = FailingHandlerServer(tmp_path_factory.mktemp("failing"))
    server.start()
    yield server
    server.stop()


def _create(admin: AdminClient, *names: str) -> None:
    for future in admin.create_topics([NewTopic(n, 2) for n in names]).values():
        future.result(10)


def test_admin_client_gets_error_codes_and_keeps_working(broken: Server) -> None:
    admin = AdminClient({"bootstrap.servers": broken.bootstrap})
    good, bad = unique_topic("fine"), unique_topic("boom")
    _create(admin, good, bad)

    futures = admin.list_offsets({TopicPartition(bad, p): OffsetSpec.latest() for p in (0, 1)})
    for future in futures.values():
        with pytest.raises(KafkaException) as info:
            future.result(10)
        assert info.value.args[0].code() == KafkaError.UNKNOWN

    resource = ConfigResource(ConfigResource.Type.TOPIC, bad)
    with pytest.raises(KafkaException) as info:
        admin.describe_configs([resource])[resource].result(10)
    assert info.value.args[0].code() == KafkaError.UNKNOWN

    # The same client (and its connection) still serves every other request.
    futures = admin.list_offsets({TopicPartition(good, 0): OffsetSpec.latest()})
    assert futures[TopicPartition(good, 0)].result(10).offset == 0
    good_resource = ConfigResource(ConfigResource.Type.TOPIC, good)
    configs = admin.describe_configs([good_resource])[good_resource].result(10)
    assert configs["cleanup.policy"].value == "delete"

    log = broken.stderr_text()
    assert "request ListOffsets v" in log and bad in log
    assert log.count("deliberate handler bug") >= 2


def test_raw_connection_stays_open_with_per_partition_codes(broken: Server) -> None:
    bad = unique_topic("boom")
    admin = AdminClient({"bootstrap.servers": broken.bootstrap})
    _create(admin, bad)
    lo = schema(2, 7)
    body = request_class(2, 7)(
        replica_id=-1,
        isolation_level=0,
        topics=(
            lo.ListOffsetsTopic(
                name=bad,
                partitions=tuple(
                    lo.ListOffsetsPartition(
                        partition_index=p, current_leader_epoch=-1, timestamp=-1
                    )
                    for p in (0, 1)
                ),
            ),
        ),
    )
    with RawKafka(broken.bootstrap) as conn:
        response = conn.request(body)
        (topic,) = response.topics
        assert topic.name == bad
        assert [(int(p.partition_index), int(p.error_code)) for p in topic.partitions] == [
            (0, -1),
            (1, -1),
        ]
        versions = conn.api_versions()
        assert int(versions.error_code) == 0


def test_one_failing_partition_does_not_fail_the_others(broken: Server) -> None:
    good, bad = unique_topic("fine"), unique_topic("boom")
    admin = AdminClient({"bootstrap.servers": broken.bootstrap})
    _create(admin, good, bad)
    mod = schema(0, 9)
    batch = build_batch([Rec(b"k", b"v")])
    body = mod.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=ms(10_000),
        topic_data=tuple(
            mod.TopicProduceData(
                name=name, partition_data=(mod.PartitionProduceData(index=0, records=batch),)
            )
            for name in (bad, good)
        ),
    )
    with RawKafka(broken.bootstrap) as conn:
        response = conn.request(body)
        codes = {
            t.name: [(int(p.error_code), int(p.base_offset)) for p in t.partition_responses]
            for t in response.responses
        }
        assert codes == {bad: [(-1, -1)], good: [(0, 0)]}
        assert int(conn.api_versions().error_code) == 0
    assert "produce to " + bad + "-0 failed" in broken.stderr_text()
