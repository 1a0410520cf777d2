"""Topic configs Kafka 3.x still accepts as deprecated no-ops round-trip through the admin
APIs (issue 12, point 6): tools that set them must not fail against this broker."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from .conftest import Server, unique_topic

DEPRECATED = {
    "message.format.version": "2.8-IV1",
    "message.downconversion.enable": "false",
}


def _describe(admin: KafkaAdminClient, topic: str) -> dict[str, Any]:
    result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return result["topic"][topic]


@pytest.mark.parametrize("incremental", [False, True])
def test_deprecated_configs_round_trip(server: Server, incremental: bool) -> None:
    topic = unique_topic("deprecated")
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
        result = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict(DEPRECATED))],
            raise_on_unknown=False,
            incremental=incremental,
        )
        outcome = result["topic"][topic]
        # kafka-python reports each resource as "OK" or its error text.
        assert outcome == "OK", outcome
        described = _describe(admin, topic)
        for key, value in DEPRECATED.items():
            assert described[key]["value"] == value, described.get(key)
    finally:
        admin.close()


def test_deprecated_config_accepted_at_creation(server: Server) -> None:
    topic = unique_topic("deprecated")
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"message.format.version": "3.0"})]
        )
        assert _describe(admin, topic)["message.format.version"]["value"] == "3.0"
    finally:
        admin.close()


def test_invalid_message_format_version_is_rejected(server: Server) -> None:
    topic = unique_topic("deprecated")
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
        result = admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, topic, configs={"message.format.version": "banana"}
                )
            ],
            raise_on_unknown=False,
            incremental=True,
        )
        outcome = result["topic"][topic]
        assert "InvalidConfigurationError" in str(outcome), outcome
    finally:
        admin.close()
