"""Failed authentications per client address over a sliding minute, in bounded memory."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_S = 60.0


def _key(address: str) -> str:
    """What one client is: its IPv4 address, or its IPv6 /64 (a host is routinely given a
    whole /64, so counting single IPv6 addresses would limit nothing)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address


class FailureLimiter:
    """After `per_minute` failures within 60 s an address is blocked until the oldest of them
    leaves the window (0: never blocked). At most `max_addresses` are remembered: the least
    recently failing are forgotten first, which can only unblock, never block, an address.

    A check that takes a while (PBKDF2 off the event loop) holds a place from begin() to
    end(): attempts in progress count as failures, so many guesses sent at once cannot all
    start before the first of them is found wrong."""

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
        # Attempts begun and not ended, per key; entries go when they reach 0, so this holds
        # no more than the attempts running.
        self._pending: dict[str, int] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _blocked(self, key: str) -> bool:
        times = self._recent(key, self._clock())
        failures = len(times) if times is not None else 0
        return failures + self._pending.get(key, 0) >= self.per_minute

    def blocked(self, address: str) -> bool:
        return self.per_minute > 0 and self._blocked(_key(address))

    def failed(self, address: str) -> None:
        if self.per_minute <= 0:
            return
        key = _key(address)
        now = self._clock()
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.per_minute)
        times.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self._max_addresses:
            self._failures.popitem(last=False)

    def begin(self, address: str) -> bool:
        """False when blocked; otherwise the attempt holds a place until end()."""
        if self.per_minute <= 0:
            return True
        key = _key(address)
        if self._blocked(key):
            return False
        self._pending[key] = self._pending.get(key, 0) + 1
        return True

    def end(self, address: str, *, ok: bool) -> None:
        """The attempt begun for `address` is over; a failure counts in the window."""
        if self.per_minute <= 0:
            return
        key = _key(address)
        left = self._pending.get(key, 0) - 1
        if left > 0:
            self._pending[key] = left
        else:
            self._pending.pop(key, None)
        if not ok:
            self.failed(address)
