"""chronik_consumer_group_lag{group,topic,partition}: computed when Prometheus scrapes, from
the committed offsets and high watermarks of that moment, so there is no gauge to keep in
step with every commit and produce.

/metrics is served from a worker thread while the group state belongs to the broker's
loop: the collector runs the computation on that loop and waits for it (bounded), rather
than reading dicts the loop is changing. One collector per process, registered once; each
service that builds a broker adds its view (held weakly, so a closed broker drops out)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Iterator

from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric

from .view import GroupsView

log = logging.getLogger(__name__)

NAME = "chronik_consumer_group_lag"
DOC = (
    "Records a consumer group has not consumed: a partition's high watermark minus the "
    "group's committed offset (0 if the commit is past it), per committed partition"
)
TIMEOUT_S = 2.0


def _family() -> GaugeMetricFamily:
    return GaugeMetricFamily(NAME, DOC, labels=["group", "topic", "partition"])


class LagCollector:
    def __init__(self) -> None:
        self._views: weakref.WeakKeyDictionary[GroupsView, asyncio.AbstractEventLoop] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def add(self, view: GroupsView, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._views[view] = loop

    def describe(self) -> Iterator[Metric]:
        # Lets REGISTRY.register learn the name without running collect().
        yield _family()

    def collect(self) -> Iterator[Metric]:
        family = _family()
        with self._lock:
            views = list(self._views.items())
        for view, loop in views:
            for group, topic, partition, lag in _lags(view, loop):
                family.add_metric([group, topic, str(partition)], lag)
        yield family


def _lags(view: GroupsView, loop: asyncio.AbstractEventLoop) -> list[tuple[str, str, int, int]]:
    if loop.is_closed():
        return []
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return view.lags()
    future: concurrent.futures.Future[list[tuple[str, str, int, int]]]
    future = concurrent.futures.Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(view.lags())
            except Exception as exc:
                future.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
        return future.result(TIMEOUT_S)
    except RuntimeError:  # the loop closed meanwhile
        return []
    except concurrent.futures.TimeoutError:
        future.cancel()
        log.warning("consumer group lag not computed within %.0f s; series left out", TIMEOUT_S)
        return []
    except Exception:
        log.exception("computing consumer group lag failed")
        return []


_COLLECTOR: LagCollector | None = None
_REGISTER_LOCK = threading.Lock()


def install(view: GroupsView, loop: asyncio.AbstractEventLoop) -> LagCollector:
    """Adds the view to the process's collector, registering that on first use."""
    global _COLLECTOR
    with _REGISTER_LOCK:
        if _COLLECTOR is None:
            _COLLECTOR = LagCollector()
            REGISTRY.register(_COLLECTOR)
        _COLLECTOR.add(view, loop)
        return _COLLECTOR
