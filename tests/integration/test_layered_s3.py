"""The layered store against a real S3 API: moto in server mode, started by the test on a free
port, with CHRONIK_OBJECT_STORE=s3://bucket/prefix. Also the store going away while records
are produced, and coming back."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.integration.conftest import Server, free_ports, unique_topic
from tests.integration.layered import (
    LAYERED_ARGS,
    all_indexed,
    assert_consumed_exactly,
    corpus,
    fetch_bytes,
    metrics,
    produce_mixed,
    segments,
    wait_tiered,
    wait_until,
    wal_bases,
)
from tests.integration.test_topic_configs import create_topic

BUCKET = "chronik-it"
PREFIX = "cluster-a"


class Moto:
    """moto's S3 server in this process; stop() and start() keep its buckets (moto's state
    lives in the process, not the server thread), like an S3 endpoint that goes away."""

    def __init__(self) -> None:
        (self.port,) = free_ports(1)
        self.server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def keys(self) -> set[str]:
        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        out: set[str] = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
            out |= {o["Key"] for o in page.get("Contents", [])}
        return out


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(var, value)
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    m = Moto()
    m.start()
    # The server subprocess takes its settings from the environment it is started with.
    monkeypatch.setenv("CHRONIK_OBJECT_STORE", f"s3://{BUCKET}/{PREFIX}")
    monkeypatch.setenv("CHRONIK_S3_ENDPOINT_URL", m.endpoint)
    try:
        yield m
    finally:
        m.stop()


def test_200k_mixed_records_tier_out_to_s3_and_fetch_byte_exact(
    moto: Moto, fresh_server: Callable[..., Server]
) -> None:
    srv = fresh_server(*LAYERED_ARGS)
    topic = unique_topic("s3")
    create_topic(srv, topic, partitions=2)
    produced = produce_mixed(srv, topic, corpus(200_000, seed=11), partitions=2)
    ends = {p: len(msgs) for p, msgs in produced.items()}
    wait_tiered(srv, topic, ends)
    rows = segments(srv, topic)
    assert {f"{PREFIX}/{r[5]}" for r in rows} <= moto.keys()
    assert not (srv.data_dir / "objects").exists()  # nothing went to the file store
    assert_consumed_exactly(srv, topic, produced)
    assert fetch_bytes(srv, "segment_cache") > 0

    srv.stop()
    shutil.rmtree(srv.data_dir / "segments")
    srv.start()
    assert_consumed_exactly(srv, topic, produced)
    assert fetch_bytes(srv, "object_store") > 0


def test_s3_down_while_producing_keeps_the_wal_and_uploads_when_it_returns(
    moto: Moto, fresh_server: Callable[..., Server]
) -> None:
    srv = fresh_server(*LAYERED_ARGS)
    topic = unique_topic("s3down")
    create_topic(srv, topic)
    msgs = corpus(90_000, seed=12)
    produced = produce_mixed(srv, topic, msgs[:30_000])
    wait_tiered(srv, topic, {0: 30_000})

    moto.stop()
    more = produce_mixed(srv, topic, msgs[30_000:])  # produce does not need the store
    produced[0] += more[0]
    end = len(produced[0])
    assert end == 90_000
    # Indexing goes on locally; the new segments wait to be uploaded and the WAL keeps them.
    wait_until(lambda: all_indexed(srv, topic, {0: end}), 60, "indexing while S3 is down")
    waiting = [r for r in segments(srv, topic) if r[4] == "local"]
    assert waiting, "segments sealed while S3 was down should be waiting for upload"
    assert min(wal_bases(srv, topic, 0)) <= waiting[0][1]
    failures = metrics(srv)
    assert any(
        name == "chronik_objectstore_requests_total" and dict(labels).get("outcome") == "error"
        for (name, labels), value in failures.items()
        if value > 0
    )
    assert_consumed_exactly(srv, topic, produced)  # all still fetchable, from the WAL

    moto.start()
    wait_tiered(srv, topic, {0: end}, timeout=120)
    rows = segments(srv, topic)
    assert {f"{PREFIX}/{r[5]}" for r in rows} <= moto.keys()
    assert_consumed_exactly(srv, topic, produced)
