"""Topic configs Kafka 3.x still accepts as deprecated no-ops round-trip through the admin
APIs (issue 12, point 6): tools that set them must not fail against this broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from .conftest import Server, unique_topic

DEPRECATED = {
    "message.format.version": "2.8-IV1",
    "message.downconversion.enable": "false",
}


@pytest.fixture
def admin(server: Server) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=server.bootstrap, request_timeout_ms=10_000)
    yield client
    client.close()


def _describe(admin: KafkaAdminClient, topic: str) -> dict[str, Any]:
    result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return result["topic"][topic]


def _alter(admin: KafkaAdminClient, topic: str, configs: dict[str, str], incremental: bool) -> Any:
    """kafka-python's outcome for the topic: "OK" or the error's text."""
    result = admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)],
        raise_on_unknown=False,
        incremental=incremental,
    )
    return result["topic"][topic]


@pytest.mark.parametrize("incremental", [False, True])
def test_deprecated_configs_round_trip(admin: KafkaAdminClient, incremental: bool) -> None:
    topic = unique_topic("deprecated")
    admin.create_topics([NewTopic(topic, 1, 1)])
    assert _alter(admin, topic, dict(DEPRECATED), incremental) == "OK"
    described = _describe(admin, topic)
    for key, value in DEPRECATED.items():
        assert described[key]["value"] == value, described.get(key)


def test_deprecated_config_accepted_at_creation(admin: KafkaAdminClient) -> None:
    topic = unique_topic("deprecated")
    admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"message.format.version": "3.0"})])
    assert _describe(admin, topic)["message.format.version"]["value"] == "3.0"


def test_invalid_message_format_version_is_rejected(admin: KafkaAdminClient) -> None:
    topic = unique_topic("deprecated")
    admin.create_topics([NewTopic(topic, 1, 1)])
    outcome = _alter(admin, topic, {"message.format.version": "banana"}, incremental=True)
    assert "InvalidConfigurationError" in str(outcome), outcome
