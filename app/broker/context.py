"""What a handler may use of the broker, and the API table entry that names the handler.

Handlers type against `BrokerContext`, not the `Broker` class: the broker imports the
handler table, so the table must not import the broker back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..config import BrokerConfig
from ..security import Security
from ..storage import Storage
from .groups import GroupCoordinator
from .protocol.codec import Request
from .txn import TransactionCoordinator

# A handler returns the whole response frame: one buffer, several buffers for
# writelines(), or None when the request gets no response (acks=0 produce).
Frame = bytes | list[bytes | memoryview] | None


@dataclass(frozen=True, slots=True)
class Endpoint:
    node_id: int
    host: str
    port: int


class BrokerContext(Protocol):
    settings: BrokerConfig
    storage: Storage
    groups: GroupCoordinator
    transactions: TransactionCoordinator
    cluster_id: str
    node_id: int
    endpoint: Endpoint
    apis: dict[int, ApiSpec]
    security: Security


Handler = Callable[[BrokerContext, Request], Awaitable[Frame]]


@dataclass(frozen=True, slots=True)
class ApiSpec:
    key: int
    min_version: int
    max_version: int
    handler: Handler
