"""Who waits on a partition log: producers for durability (wait_durable, and wait_synced,
which forces an fsync round in every mode), and fetch long-polls for new data. The log
resolves them as fsync rounds finish and its high watermark moves."""

from __future__ import annotations

import asyncio
import contextlib

from app.storage.errors import StorageError


def _settle(fut: asyncio.Future[None], error: str | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(StorageError(error))


class Waiters:
    def __init__(self) -> None:
        self.durable: list[tuple[int, asyncio.Future[None]]] = []
        # wait_synced callers: waiting for a round to start, and in the round under way.
        self.forced: list[asyncio.Future[None]] = []
        self.forced_round: list[asyncio.Future[None]] = []
        self._data: asyncio.Future[None] | None = None

    def add_durable(self, offset: int) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        self.durable.append((offset, fut))
        return fut

    def add_forced(self) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        self.forced.append(fut)
        return fut

    def start_round(self) -> bool:
        """A round is being prepared: it covers every forced waiter so far. True if any."""
        if not self.forced:
            return False
        self.forced_round.extend(self.forced)
        self.forced = []
        return True

    def round_done(self, error: BaseException | None) -> None:
        forced, self.forced_round = self.forced_round, []
        message = None if error is None else f"fsync failed: {error}"
        for fut in forced:
            _settle(fut, message)
        if error is not None:
            durable, self.durable = self.durable, []
            for _off, fut in durable:
                _settle(fut, message)

    def advanced(self, offset: int) -> None:
        """The high watermark moved to `offset`."""
        if self.durable:
            keep = []
            for off, fut in self.durable:
                if off <= offset:
                    _settle(fut, None)
                else:
                    keep.append((off, fut))
            self.durable = keep
        data = self._data
        if data is not None:
            self._data = None
            _settle(data, None)

    async def wait_data(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        fut = self._data
        if fut is None or fut.done() or fut.get_loop() is not loop:
            fut = self._data = loop.create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), timeout)

    def synced_by_close(self) -> None:
        """close() fsynced everything: forced waiters are done."""
        forced = self.forced_round + self.forced
        self.forced_round, self.forced = [], []
        for fut in forced:
            _settle(fut, None)

    def closed(self, message: str) -> None:
        pending = [f for _off, f in self.durable] + self.forced_round + self.forced
        self.durable, self.forced_round, self.forced = [], [], []
        for fut in pending:
            _settle(fut, message)
        if self._data is not None:
            _settle(self._data, None)
