"""Produce with each client and codec, consume back with every client, compare exactly.

Each (producer, codec) pair produces once into its own topic; every
consumer then reads that topic with CRC checking on. That covers each
codec with each client on both sides, and every cross-client pair.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .clients import (
    CLIENTS,
    CODECS,
    CONSUMERS,
    NULL_HEADER_VALUES,
    PRODUCERS,
    Msg,
    diff,
    make_messages,
    watermarks,
    with_offsets,
)
from .conftest import Server, unique_topic

N = 200


@pytest.fixture(scope="module")
def produced(server: Server) -> Callable[[str, str], tuple[str, list[Msg]]]:
    """produced(producer, codec) -> (topic, expected messages with offsets), produced once."""
    cache: dict[tuple[str, str], tuple[str, list[Msg]] | BaseException] = {}

    def get(producer: str, codec: str) -> tuple[str, list[Msg]]:
        key = (producer, codec)
        if key not in cache:
            topic = unique_topic(f"rt-{producer}-{codec}")
            msgs = make_messages(
                N, null_header_values=NULL_HEADER_VALUES[producer], seed=len(cache)
            )
            try:
                offsets = PRODUCERS[producer](server.bootstrap, topic, msgs, codec)
                cache[key] = (topic, with_offsets(msgs, offsets))
            except BaseException as exc:
                cache[key] = exc
                raise
        got = cache[key]
        if isinstance(got, BaseException):
            raise AssertionError(f"producing with {producer}/{codec} failed earlier: {got!r}")
        return got

    return get


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("producer", CLIENTS)
def test_produce_offsets(produced, server: Server, producer: str, codec: str) -> None:
    """Delivery reports give offsets 0..N-1 in send order; the log ends at N."""
    topic, expected = produced(producer, codec)
    assert [m.offset for m in expected] == list(range(N))
    assert watermarks(server.bootstrap, topic) == (0, N)


@pytest.mark.parametrize("consumer", CLIENTS)
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("producer", CLIENTS)
def test_roundtrip(produced, server: Server, producer: str, codec: str, consumer: str) -> None:
    topic, expected = produced(producer, codec)
    got = CONSUMERS[consumer](server.bootstrap, topic, N)
    assert got == expected, diff(expected, got)


@pytest.mark.parametrize("consumer", CLIENTS)
def test_consume_from_middle(produced, server: Server, consumer: str) -> None:
    """Seeking into the middle of a compressed batch yields exactly the later records."""
    topic, expected = produced("confluent", "zstd")
    start = 137
    got = CONSUMERS[consumer](server.bootstrap, topic, N - start, start=start)
    assert got == expected[start:], diff(expected[start:], got)
