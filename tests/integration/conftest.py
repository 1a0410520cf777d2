"""Fixtures that run the real Chronik server as a subprocess.

`server` is one server per test module, shared by its tests (each test uses
its own uuid-named topics). `fresh_server` is a factory for tests that stop,
kill or restart the server, or need different flags.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

_live_servers: list[Server] = []


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (bound to port 0 together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class ServerDied(AssertionError):
    pass


class Server:
    """The Chronik service in a subprocess, on free ports, with its own data dir."""

    def __init__(self, base_dir: Path, extra_args: Sequence[str] = (), name: str = "chronik"):
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / f"{name}.stderr.log"
        self.kafka_port, self.http_port = free_ports(2)
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "app",
            "--data-dir",
            str(self.data_dir),
            "--kafka-host",
            "127.0.0.1",
            "--kafka-port",
            str(self.kafka_port),
            "--advertised-host",
            "127.0.0.1",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            *self.extra_args,
        ]

    def start(self) -> Server:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            env = dict(os.environ)
            env.setdefault("PYTHONUNBUFFERED", "1")
            self.proc = subprocess.Popen(
                self.command(),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        if self not in _live_servers:
            _live_servers.append(self)
        self.wait_ready()
        return self

    def stderr_text(self, tail: int = 20000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-tail:]

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                code = self.proc.poll()
                if code is not None:
                    raise ServerDied(
                        f"server exited with code {code} before it was ready; stderr:\n"
                        + self.stderr_text()
                    )
                try:
                    r = client.get(self.http + "/readyz")
                    if r.status_code == 200:
                        return
                    last_error = f"/readyz answered {r.status_code}"
                except httpx.HTTPError as exc:
                    last_error = repr(exc)
                time.sleep(0.05)
        self.kill()
        raise ServerDied(
            f"server not ready after {timeout}s ({last_error}); stderr:\n" + self.stderr_text()
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; returns the exit code. Kills and fails if it does not exit."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"server did not exit within {timeout}s of SIGTERM; stderr:\n"
                    + self.stderr_text()
                ) from None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> Server:
        """Graceful stop (if running), then start again on the same ports and data dir."""
        if self.running():
            self.stop()
        return self.start()

    # HTTP helpers -----------------------------------------------------------

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.http + path, timeout=10.0)

    def topics(self) -> dict[str, dict[int, tuple[int, int]]]:
        """GET /topics as {name: {partition: (log_start_offset, log_end_offset)}}."""
        r = self.get("/topics")
        assert r.status_code == 200, r.text
        out: dict[str, dict[int, tuple[int, int]]] = {}
        for t in r.json():
            out[t["name"]] = {
                p["partition"]: (p["log_start_offset"], p["log_end_offset"])
                for p in t["partitions"]
            }
        return out


@contextlib.contextmanager
def running_server(base_dir: Path, extra_args: Sequence[str] = ()) -> Iterator[Server]:
    """A started Server, stopped (SIGTERM, then SIGKILL if need be) on exit."""
    srv = Server(base_dir, extra_args)
    try:
        srv.start()
        yield srv
    finally:
        try:
            if srv.running():
                srv.stop()
        finally:
            srv.kill()
            if srv in _live_servers:
                _live_servers.remove(srv)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("chronik")) as srv:
        yield srv


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: fresh_server(*extra_args, start=True) -> a new Server with its own data dir."""
    made: list[Server] = []

    def make(*extra_args: str, start: bool = True) -> Server:
        srv = Server(tmp_path / f"srv{len(made)}", extra_args, name=f"chronik{len(made)}")
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        srv.kill()
        if srv in _live_servers:
            _live_servers.remove(srv)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.failed:
        for srv in list(_live_servers):
            text = srv.stderr_text(8000)
            if text:
                report.sections.append((f"chronik stderr ({srv.log_path})", text))
    return report
