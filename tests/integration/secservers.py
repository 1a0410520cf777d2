"""Servers with TLS and SASL for the listener security tests, and the clients that talk to
them: users are made with the CLI (`python -m app users set`, password on stdin),
certificates by certs.py."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import confluent_kafka
import httpx

from .certs import CertAuthority, CertFiles
from .conftest import REPO, Server, _live_servers
from .rawkafka import RawKafka, decode_response, encode_request, request_class

PASSWORD = "correct horse battery staple"
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
METADATA = 3
NONE = 0
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58


def add_user(
    data_dir: Path,
    name: str,
    password: str = PASSWORD,
    mechanisms: Sequence[str] = ("SCRAM-SHA-256", "SCRAM-SHA-512"),
) -> None:
    for mechanism in mechanisms:
        subprocess.run(
            [sys.executable, "-m", "app", "users", "set", name, "--mechanism", mechanism],
            input=password.encode(),
            env={**os.environ, "CHRONIK_DATA_DIR": str(data_dir)},
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=60,
        )


class SecureServer(Server):
    """A Server whose HTTP listener may speak TLS (readiness is checked over https)."""

    def __init__(
        self, base_dir: Path, extra_args: Sequence[str], *, ca_file: Path | None = None
    ) -> None:
        super().__init__(base_dir, ["--index-workers", "0", *extra_args])
        self.ca_file = ca_file

    @property
    def https(self) -> bool:
        return self.ca_file is not None

    @property
    def http(self) -> str:
        scheme = "https" if self.https else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        # httpx reads SSL_CERT_FILE when its client is made (trust_env).
        old = os.environ.get("SSL_CERT_FILE")
        if self.ca_file is not None:
            os.environ["SSL_CERT_FILE"] = str(self.ca_file)
        try:
            super().wait_ready(timeout)
        finally:
            if old is None:
                os.environ.pop("SSL_CERT_FILE", None)
            else:
                os.environ["SSL_CERT_FILE"] = old

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        verify: Any = str(self.ca_file) if self.ca_file is not None else True
        text = httpx.get(self.http + "/metrics", timeout=10, verify=verify).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            got = ",".join(sorted((m.group(3) or "").split(","))) if m.group(3) else ""
            if got == want:
                return float(m.group(4))
        return 0.0

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.stderr_text(200_000)
            if text in log:
                return log
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the server log:\n{self.stderr_text(4000)}")


def sasl_args(
    protocol: str = "SASL_PLAINTEXT", mechanisms: str | None = None, failures_per_minute: int = 1000
) -> list[str]:
    """Flags of a SASL listener; tests fail on purpose from one address, so the failure
    limit is high unless a test is about it."""
    args = ["--kafka-security-protocol", protocol]
    if mechanisms is not None:
        args += ["--sasl-mechanisms", mechanisms]
    return [*args, "--sasl-failures-per-minute", str(failures_per_minute)]


def python_auth(
    srv: Server, mechanism: str, user: str = "bob", password: str = PASSWORD
) -> dict[str, Any]:
    """kafka-python's and aiokafka's (same named) settings for SASL_PLAINTEXT."""
    return dict(
        bootstrap_servers=srv.bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=password,
    )


def tls_args(
    server: CertFiles, ca: CertAuthority | None = None, client_auth: str = "none"
) -> list[str]:
    args = ["--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key)]
    if ca is not None:
        args += ["--tls-ca-file", str(ca.ca_file), "--tls-client-auth", client_auth]
    return args


# --------------------------------------------------------------------------- raw clients


def raw(
    bootstrap: str,
    *,
    source: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> RawKafka:
    """A RawKafka from a chosen loopback address (per-address limits), maybe over TLS."""
    client = RawKafka.__new__(RawKafka)
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    client.sock = sock
    client.timeout = timeout
    client._next_correlation_id = 1
    return client


def client_tls(ca: CertAuthority, cert: CertFiles | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def handshake(client: RawKafka, mechanism: str, version: int = 1) -> Any:
    return client.request(request_class(SASL_HANDSHAKE, version)(mechanism=mechanism))


def authenticate(client: RawKafka, token: bytes, version: int = 2) -> Any:
    return client.request(request_class(SASL_AUTHENTICATE, version)(auth_bytes=token))


def plain_token(user: str, password: str) -> bytes:
    return b"\0" + user.encode() + b"\0" + password.encode()


def scram_login(
    client: RawKafka,
    user: str,
    password: str,
    mechanism: str = "SCRAM-SHA-256",
    *,
    v0: bool = False,
) -> Any:
    """A whole SCRAM exchange (kafka-python's client side); the last response, or for the
    legacy framing the server-final message."""
    from kafka.net.sasl.scram import SaslMechanismScram

    scram = SaslMechanismScram(
        sasl_plain_username=user, sasl_plain_password=password, sasl_mechanism=mechanism
    )
    resp = handshake(client, mechanism, version=0 if v0 else 1)
    assert resp.error_code == NONE, resp
    last: Any = None
    while not scram.is_done():
        token = scram.auth_bytes()
        if v0:
            client.send_bytes(struct.pack(">i", len(token)) + token)
            last = client.recv_frame()
            scram.receive(last)
        else:
            last = authenticate(client, token)
            if last.error_code != NONE:
                return last
            scram.receive(last.auth_bytes)
    return last


def metadata(client: RawKafka, version: int = 9) -> Any:
    return client.metadata(None, version=version)


def send_request(client: RawKafka, body: Any) -> int:
    cid = client.next_correlation_id()
    client.send_bytes(encode_request(body, cid))
    return cid


def read_response(client: RawKafka, api_key: int, version: int) -> Any:
    return decode_response(api_key, version, client.recv_frame())[1]


@contextlib.contextmanager
def started(server: SecureServer) -> Iterator[SecureServer]:
    """Start, and stop (SIGTERM, then SIGKILL) on exit; its log goes with a failure report."""
    _live_servers.append(server)
    try:
        server.start()
        yield server
    finally:
        try:
            if server.running():
                server.stop()
        finally:
            server.kill()
            if server in _live_servers:
                _live_servers.remove(server)


# --------------------------------------------------------------------------- confluent


def produce_values(conf: dict[str, Any], topic: str, values: Sequence[bytes]) -> None:
    errors: list[str] = []
    p = confluent_kafka.Producer({**conf, "error_cb": lambda e: errors.append(str(e))})
    failed: list[str] = []
    for v in values:
        p.produce(topic, v, on_delivery=lambda e, m: failed.append(str(e)) if e else None)
    left = p.flush(30)
    assert left == 0 and not failed, f"undelivered {left}, failed {failed[:3]}, errors {errors[:3]}"


def consume_values(conf: dict[str, Any], topic: str, n: int, group: str) -> list[bytes]:
    c = confluent_kafka.Consumer(
        {**conf, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": True}
    )
    out: list[bytes] = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(out) < n and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.5):
                assert m.error() is None, m.error()
                out.append(m.value())
        c.commit(asynchronous=False)
    finally:
        c.close()
    return out


def client_errors(conf: dict[str, Any], expected: str, timeout: float = 20.0) -> str:
    """What a confluent producer that cannot connect reports (error callbacks and its log),
    collected until `expected` shows up or `timeout` passes."""
    errors: list[str] = []
    p = confluent_kafka.Producer(
        {
            **conf,
            "error_cb": lambda e: errors.append(str(e)),
            "logger": _Collect(errors),
            "reconnect.backoff.max.ms": 500,
        }
    )
    try:
        p.produce("never-delivered", b"x")
        deadline = time.monotonic() + timeout
        while not any(expected in e for e in errors) and time.monotonic() < deadline:
            p.poll(0.1)
        return "\n".join(errors)
    finally:
        p.purge()
        p.flush(0)


class _Collect:
    """A logging.Logger stand-in that librdkafka's `logger` option writes into."""

    def __init__(self, into: list[str]) -> None:
        self._into = into

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self._into.append(fmt % args if args else fmt)
