"""Composes storage, the Kafka listener and the HTTP app on one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
import uuid
from collections.abc import Callable, Generator
from pathlib import Path

import uvicorn

from .api.app import create_app
from .broker.broker import Broker
from .broker.groups import lag_metrics
from .broker.groups.view import GroupsView
from .broker.server import KafkaServer
from .config import Settings
from .security import Security, no_users_message, tls
from .storage import Storage
from .storage.fileutil import atomic_write

log = logging.getLogger(__name__)


def cluster_id(data_dir: Path) -> str:
    """Stable across restarts: clients compare it to detect a different cluster."""
    path = data_dir / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    value = uuid.uuid4().hex[:22]
    # A torn or unsynced id would make clients see another cluster after a crash.
    atomic_write(path, value.encode())
    return value


class _EmbeddedHttpServer(uvicorn.Server):
    """uvicorn on our loop; the service, not uvicorn, owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The one context of both listeners (the same files), or None without a certificate."""
    cfg = settings.security
    if not cfg.tls_cert_file:
        return None
    try:
        return tls.server_context(cfg)
    except (OSError, ssl.SSLError) as exc:
        raise RuntimeError(
            f"cannot load TLS certificate {cfg.tls_cert_file}, key {cfg.tls_key_file}"
            f"{' or CA ' + cfg.tls_ca_file if cfg.tls_ca_file else ''}: {exc}"
        ) from exc


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tls_context = _tls_context(settings)
        self.storage = Storage(settings)
        self.security = Security.open(settings)
        self.app = create_app(self.storage, self.security)
        b = settings.broker
        self.app.state.kafka_bootstrap = f"{b.advertised_host}:{b.advertised_kafka_port}"
        self.kafka: KafkaServer | None = None
        self.http: uvicorn.Server | None = None
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    def reload_tls(self) -> None:
        """SIGHUP: new handshakes on both listeners use the certificate files as they are
        now; open connections keep the certificate they were made with."""
        if self.tls_context is None:
            log.info("SIGHUP: no TLS certificate configured, nothing to reload")
            return
        cfg = self.settings.security
        try:
            tls.reload(self.tls_context, cfg)
        except (OSError, ssl.SSLError) as exc:
            log.error("SIGHUP: TLS certificates not reloaded, the previous ones stay: %s", exc)
            return
        log.info("SIGHUP: TLS certificates reloaded from %s", cfg.tls_cert_file)

    def _http_tls_factory(self) -> Callable[..., ssl.SSLContext] | None:
        ctx = self.tls_context
        if ctx is None or not self.settings.security.http_tls:
            return None
        return lambda config, default: ctx

    def _warn_without_users(self) -> None:
        cfg = self.settings.security
        if (
            cfg.sasl_enabled or cfg.http_auth == "required"
        ) and not self.security.store.has_users():
            log.warning("authentication is on and every client is refused: %s", no_users_message())

    async def run(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        await self.storage.start()
        self._warn_without_users()
        broker = Broker(s, self.storage, cluster_id(s.data_dir), self.security)
        kafka_tls = self.tls_context if s.security.tls_enabled else None
        self.kafka = KafkaServer(broker, self.security, kafka_tls)
        await broker.groups.start()
        groups = GroupsView(broker.groups, self.storage)
        self.app.state.groups = groups
        lag_metrics.install(groups, asyncio.get_running_loop())
        # Recovery finishes or aborts what a crash left before any client is accepted.
        await broker.transactions.start()
        await self.kafka.start(s.broker.host, s.broker.port)
        config = uvicorn.Config(
            self.app,
            host=s.http.host,
            port=s.http.port,
            log_level=s.log_level.lower(),
            access_log=False,
            lifespan="off",
            # Our context rather than uvicorn's: the one SIGHUP reloads.
            ssl_context_factory=self._http_tls_factory(),
        )
        self.http = _EmbeddedHttpServer(config)
        http_task = asyncio.create_task(self.http.serve())
        while not self.http.started and not http_task.done():
            await asyncio.sleep(0.01)
        if http_task.done():
            await self.kafka.stop()
            await broker.close()
            await self.storage.close()
            self.security.close()
            http_task.result()
            raise RuntimeError("HTTP listener failed to start")
        self.app.state.ready = True
        # What import and startup made lives as long as the process: out of the collector's
        # way, a full collection stops walking it (50-70 ms pauses of the event loop, every
        # ~2 s under search load; bench/README.md).
        gc.collect()
        gc.freeze()
        log.info(
            "ready: kafka %s:%d, http %s:%d", s.broker.host, s.broker.port, s.http.host, s.http.port
        )
        await self._stop.wait()
        log.info("shutting down")
        self.app.state.ready = False
        await self.kafka.stop()
        await broker.close()
        self.http.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http_task, timeout=5)
        await self.storage.close()
        self.security.close()
        log.info("stopped")


async def serve(settings: Settings) -> None:
    service = Service(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
    loop.add_signal_handler(signal.SIGHUP, service.reload_tls)
    await service.run()
