"""The broker: settings, storage, the group and transaction coordinators and the API table;
handlers see it through the BrokerContext protocol (context.py), so they never import this
module."""

from __future__ import annotations

import logging

from ..config import Settings
from ..security import Security
from ..storage.store import Storage
from .context import ApiSpec, Endpoint, Frame
from .groups import GroupCoordinator, GroupStore
from .handlers import all_apis
from .protocol.codec import Request
from .txn import TransactionCoordinator, TransactionStore

log = logging.getLogger(__name__)


class Broker:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        cluster_id: str,
        security: Security,
    ) -> None:
        # Handlers read their settings (auto-creation, default partitions) from here.
        self.settings = settings.broker
        self.storage = storage
        self.cluster_id = cluster_id
        # The service owns it (the HTTP app shares it) and closes it.
        self.security = security
        self.node_id = settings.broker.node_id
        self.endpoint = Endpoint(
            self.node_id, settings.broker.advertised_host, settings.broker.advertised_kafka_port
        )
        self.apis: dict[int, ApiSpec] = {spec.key: spec for spec in all_apis()}
        # Group state is the broker's, not storage's: storage never imports the broker.
        self.groups = GroupCoordinator(
            GroupStore(settings.data_dir / "groups.sqlite"),
            initial_rebalance_delay_ms=settings.groups.initial_rebalance_delay_ms,
            min_session_ms=settings.groups.min_session_timeout_ms,
            max_session_ms=settings.groups.max_session_timeout_ms,
            offsets_retention_ms=settings.groups.offsets_retention_minutes * 60_000,
        )
        self.transactions = TransactionCoordinator(
            TransactionStore(settings.data_dir / "transactions.sqlite"),
            next_producer_id=storage.metadata.next_producer_id,
            write_marker=storage.write_marker,
            complete_offsets=self._complete_txn_offsets,
            max_timeout_ms=settings.broker.transaction_max_timeout_ms,
            abort_check_ms=settings.broker.transaction_abort_check_ms,
        )

    async def _complete_txn_offsets(
        self, group_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> None:
        await self.groups.complete_txn_offsets(
            group_id, producer_id, commit, producer_epoch=producer_epoch
        )

    async def close(self) -> None:
        await self.transactions.close()
        self.transactions.store.close()
        await self.groups.close()
        self.groups.store.close()

    def supports(self, api_key: int, version: int) -> bool:
        spec = self.apis.get(api_key)
        return spec is not None and spec.min_version <= version <= spec.max_version

    async def handle(self, req: Request) -> Frame:
        return await self.apis[req.header.api_key].handler(self, req)
