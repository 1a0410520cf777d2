"""The broker: what every handler sees (settings, storage, the API table)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..config import Settings
from ..storage.store import Storage
from .groups import GroupCoordinator
from .handlers import all_apis
from .handlers.base import ApiSpec, Frame
from .protocol.codec import Request

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    node_id: int
    host: str
    port: int


class Broker:
    def __init__(self, settings: Settings, storage: Storage, cluster_id: str) -> None:
        self.settings = settings
        self.storage = storage
        self.cluster_id = cluster_id
        self.node_id = settings.node_id
        self.endpoint = Endpoint(
            settings.node_id, settings.advertised_host, settings.advertised_kafka_port
        )
        self.apis: dict[int, ApiSpec] = {spec.key: spec for spec in all_apis()}
        self.groups = GroupCoordinator(
            storage.groups,
            initial_rebalance_delay_ms=settings.group_initial_rebalance_delay_ms,
            min_session_ms=settings.group_min_session_timeout_ms,
            max_session_ms=settings.group_max_session_timeout_ms,
            offsets_retention_ms=settings.offsets_retention_minutes * 60_000,
        )

    def supports(self, api_key: int, version: int) -> bool:
        spec = self.apis.get(api_key)
        return spec is not None and spec.min_version <= version <= spec.max_version

    async def handle(self, req: Request) -> Frame:
        return await self.apis[req.header.api_key].handler(self, req)
