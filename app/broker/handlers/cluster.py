"""DescribeCluster v0-v2 and DescribeLogDirs v1-v4."""

from __future__ import annotations

import shutil
from typing import Any

from ...security.acl import CLUSTER_NAME, Operation, ResourceType
from ...storage import errors as se
from ..authz import authorized_operations, cluster_allowed
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    CLUSTER_AUTHORIZATION_FAILED,
    MISMATCHED_ENDPOINT_TYPE,
    NONE,
    UNSUPPORTED_ENDPOINT_TYPE,
)
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

DESCRIBE_CLUSTER = 60
DESCRIBE_LOG_DIRS = 35
# Kafka's "authorized operations not requested" sentinel.
OPS_NOT_REQUESTED = -(2**31)
ENDPOINT_BROKERS = 1
ENDPOINT_CONTROLLERS = 2


async def describe_cluster(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    endpoint_type = int(getattr(req.body, "endpoint_type", ENDPOINT_BROKERS))
    code, message = NONE, None
    # Kafka's broker listener answers only for broker endpoints; controllers have their own.
    if endpoint_type == ENDPOINT_CONTROLLERS:
        code = MISMATCHED_ENDPOINT_TYPE
        message = "this is a broker endpoint; controller endpoints were requested"
    elif endpoint_type != ENDPOINT_BROKERS:
        code, message = UNSUPPORTED_ENDPOINT_TYPE, f"unsupported endpoint type {endpoint_type}"
    ep = broker.endpoint
    brokers: tuple[Any, ...] = ()
    if code == NONE:
        brokers = (
            build(
                mod.DescribeClusterBroker,
                broker_id=ep.node_id,
                host=ep.host,
                port=ep.port,
                rack=None,
                is_fenced=False,
            ),
        )
    out = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(code),
        error_message=message,
        endpoint_type=endpoint_type,
        cluster_id=broker.cluster_id,
        controller_id=broker.node_id,
        brokers=brokers,
        cluster_authorized_operations=cluster_operations(
            broker, req, bool(req.body.include_cluster_authorized_operations)
        ),
    )
    return respond(req, out)


def cluster_operations(broker: BrokerContext, req: Request, requested: bool) -> int:
    """The cluster's authorized-operations field: only when asked, and 0 to a principal
    that may not describe the cluster (AuthHelper.computeDescribeClusterResponse)."""
    if not requested:
        return OPS_NOT_REQUESTED
    if not cluster_allowed(broker, req, Operation.DESCRIBE):
        return 0
    return authorized_operations(broker, req, ResourceType.CLUSTER, CLUSTER_NAME)


def _wanted(broker: BrokerContext, requested: Any) -> dict[str, list[int]]:
    """{topic: partitions} to describe; partitions this broker does not have are left out,
    as Kafka leaves out replicas a broker does not host."""
    topics = broker.storage.metadata.topics()
    if requested is None:
        return {name: list(range(meta.partitions)) for name, meta in sorted(topics.items())}
    # Dicts as ordered sets: a request may repeat a partition millions of times.
    out: dict[str, dict[int, None]] = {}
    for t in requested:
        meta = topics.get(t.topic)
        if meta is None:
            continue
        parts = out.setdefault(t.topic, {})
        parts.update((int(p), None) for p in t.partitions if 0 <= p < meta.partitions)
    return {k: list(v) for k, v in out.items() if v}


async def describe_log_dirs(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    if not cluster_allowed(broker, req, Operation.DESCRIBE):
        out = build(
            resp,
            throttle_time=NO_THROTTLE,
            error_code=err(CLUSTER_AUTHORIZATION_FAILED),
            results=(),
        )
        return respond(req, out)
    storage = broker.storage
    topics = []
    for name, partitions in _wanted(broker, req.body.topics).items():
        entries = []
        for p in partitions:
            try:
                size = storage.log(name, p).size_bytes()
            except se.UnknownTopic:
                continue  # deleted meanwhile
            entries.append(
                build(
                    mod.DescribeLogDirsPartition,
                    partition_index=p,
                    partition_size=size,
                    offset_lag=0,
                    is_future_key=False,
                )
            )
        topics.append(build(mod.DescribeLogDirsTopic, name=name, partitions=tuple(entries)))
    usage = shutil.disk_usage(storage.logs_dir)
    result = build(
        mod.DescribeLogDirsResult,
        error_code=err(NONE),
        log_dir=str(storage.logs_dir.resolve()),
        topics=tuple(topics),
        total_bytes=usage.total,
        usable_bytes=usage.free,
    )
    out = build(resp, throttle_time=NO_THROTTLE, error_code=err(NONE), results=(result,))
    return respond(req, out)


APIS = [
    ApiSpec(DESCRIBE_CLUSTER, 0, 2, describe_cluster),
    ApiSpec(DESCRIBE_LOG_DIRS, 1, 4, describe_log_dirs),
]
