"""Prometheus metrics of the Kafka listener."""

from __future__ import annotations

import struct

from prometheus_client import Counter, Gauge, Histogram

API_NAMES = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    12: "Heartbeat",
    13: "LeaveGroup",
    14: "SyncGroup",
    15: "DescribeGroups",
    16: "ListGroups",
    17: "SaslHandshake",
    18: "ApiVersions",
    19: "CreateTopics",
    20: "DeleteTopics",
    21: "DeleteRecords",
    22: "InitProducerId",
    24: "AddPartitionsToTxn",
    25: "AddOffsetsToTxn",
    26: "EndTxn",
    28: "TxnOffsetCommit",
    29: "DescribeAcls",
    30: "CreateAcls",
    31: "DeleteAcls",
    32: "DescribeConfigs",
    33: "AlterConfigs",
    35: "DescribeLogDirs",
    36: "SaslAuthenticate",
    37: "CreatePartitions",
    42: "DeleteGroups",
    44: "IncrementalAlterConfigs",
    47: "OffsetDelete",
    50: "DescribeUserScramCredentials",
    51: "AlterUserScramCredentials",
    60: "DescribeCluster",
    65: "DescribeTransactions",
    66: "ListTransactions",
}

REQUESTS = Counter(
    "chronik_kafka_requests",
    "Kafka requests by API, version and outcome (none, UNSUPPORTED_VERSION, or failed: the "
    "handler raised and the connection was closed; per-partition error codes are in the "
    "responses)",
    ["api", "version", "error"],
)
REQUEST_SECONDS = Histogram(
    "chronik_kafka_request_seconds",
    "Time from a request's arrival to its response (produce includes the fsync)",
    ["api"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PRODUCE_RECORDS = Counter("chronik_produce_records", "Records appended", ["topic"])
PRODUCE_BYTES = Counter("chronik_produce_bytes", "Record batch bytes appended", ["topic"])
FETCH_RECORDS = Counter("chronik_fetch_records", "Records sent to consumers", ["topic"])
TRANSACTIONS = Counter(
    "chronik_transactions",
    "Transactions completed, by outcome: commit and abort (EndTxn from the producer), timeout "
    "(aborted by the coordinator after transaction.timeout.ms) and fenced (aborted because a "
    "new producer initialized the same transactional.id)",
    ["outcome"],
)
TRANSACTIONS_OPEN = Gauge(
    "chronik_transactions_open",
    "Transactions begun (a partition or group added) and not yet completed",
)

_LENGTH = struct.Struct(">i")


def api_name(key: int) -> str:
    return API_NAMES.get(key, str(key))


def count_records(chunks: list[bytes | memoryview]) -> int:
    """Records in stored batches (each chunk holds whole batches)."""
    n = 0
    for chunk in chunks:
        pos, end = 0, len(chunk)
        while pos + 61 <= end:
            (length,) = _LENGTH.unpack_from(chunk, pos + 8)
            (count,) = _LENGTH.unpack_from(chunk, pos + 57)
            n += max(count, 0)
            pos += 12 + length
    return n
