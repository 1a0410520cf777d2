"""Failed authentications per client address over a sliding minute, in bounded memory."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_S = 60.0


class FailureLimiter:
    """After `per_minute` failures within 60 s an address is blocked until the oldest of them
    leaves the window (0: never blocked). At most `max_addresses` are remembered: the least
    recently failing are forgotten first, which can only unblock, never block, an address."""

    def __init__(
        self,
        per_minute: int,
        *,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self._max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def blocked(self, address: str) -> bool:
        if self.per_minute <= 0:
            return False
        times = self._recent(address, self._clock())
        return times is not None and len(times) >= self.per_minute

    def failed(self, address: str) -> None:
        if self.per_minute <= 0:
            return
        now = self._clock()
        times = self._recent(address, now)
        if times is None:
            times = self._failures[address] = deque(maxlen=self.per_minute)
        times.append(now)
        self._failures.move_to_end(address)
        while len(self._failures) > self._max_addresses:
            self._failures.popitem(last=False)
