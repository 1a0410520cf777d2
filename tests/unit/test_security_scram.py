"""SCRAM against the RFC 7677 test vector and a client written from RFC 5802, PLAIN as
Kafka's PlainSaslServer answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable

import pytest

from app.security import scram
from app.security.errors import AuthenticationFailed
from app.security.plain import authenticate_plain

# RFC 7677 section 3.
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
INVALID = (
    "Authentication failed during authentication due to invalid credentials with SASL mechanism {}"
)


def rfc_server(password: bytes = b"pencil") -> scram.ScramServer:
    cred = scram.derive("SCRAM-SHA-256", password, salt=RFC_SALT, iterations=4096)
    return scram.ScramServer("SCRAM-SHA-256", {"user": cred}.get, server_nonce=RFC_SERVER_NONCE)


def test_rfc7677_vector() -> None:
    server = rfc_server()
    assert server.step(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert not server.complete
    assert server.step(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL
    assert server.complete and server.username == "user"


def test_rfc7677_wrong_password_fails_at_the_final_step() -> None:
    server = rfc_server(b"pencil2")
    server.step(RFC_CLIENT_FIRST)
    with pytest.raises(AuthenticationFailed, match="invalid credentials") as exc:
        server.step(RFC_CLIENT_FINAL)
    assert str(exc.value) == INVALID.format("SCRAM-SHA-256")
    assert server.reason == "wrong password" and not server.complete
    with pytest.raises(AuthenticationFailed):  # a failed exchange stays failed
        server.step(RFC_CLIENT_FINAL)


class Client:
    """A SCRAM client from RFC 5802 section 3, independent of the server code."""

    def __init__(self, mechanism: str, user: str, password: bytes) -> None:
        self.alg = scram.MECHANISMS[mechanism]
        self.user, self.password = user, password
        self.nonce = secrets.token_urlsafe(18)

    def first(self, gs2: str = "n,,") -> bytes:
        self.gs2 = gs2
        name = self.user.replace("=", "=3D").replace(",", "=2C")
        self.bare = f"n={name},r={self.nonce}"
        return (gs2 + self.bare).encode()

    def final(self, server_first: bytes, nonce: str | None = None) -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        assert attrs["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac(
            self.alg, self.password, base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.new(salted, b"Client Key", self.alg).digest()
        stored = hashlib.new(self.alg, client_key).digest()
        cbind = base64.b64encode(self.gs2.encode()).decode()
        without = f"c={cbind},r={nonce or attrs['r']}"
        auth = f"{self.bare},{server_first.decode()},{without}".encode()
        sig = hmac.new(stored, auth, self.alg).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.alg).digest()
        self.expected = b"v=" + base64.b64encode(hmac.new(server_key, auth, self.alg).digest())
        return f"{without},p={base64.b64encode(proof).decode()}".encode()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("user", ["alice", "a,b=c", "ünï"])
def test_exchange_with_an_rfc_client(mechanism: str, user: str) -> None:
    creds = {user: scram.derive(mechanism, b"s3cret", iterations=4096)}
    server = scram.ScramServer(mechanism, creds.get)
    client = Client(mechanism, user, b"s3cret")
    final = client.final(server.step(client.first()))
    assert server.step(final) == client.expected
    assert server.complete and server.username == user


def test_unknown_user_looks_like_a_known_one_until_the_end() -> None:
    creds = {"alice": scram.derive("SCRAM-SHA-512", b"pw")}
    first = scram.ScramServer("SCRAM-SHA-512", creds.get).step(b"n,,n=mallory,r=abc")
    again = scram.ScramServer("SCRAM-SHA-512", creds.get).step(b"n,,n=mallory,r=abc")
    salt = lambda m: dict(a.split("=", 1) for a in m.decode().split(","))["s"]  # noqa: E731
    assert salt(first) == salt(again)  # the same fake salt each time, like a real user's
    assert b",i=4096" in first
    client = Client("SCRAM-SHA-512", "mallory", b"pw")
    server = scram.ScramServer("SCRAM-SHA-512", creds.get)
    final = client.final(server.step(client.first()))
    with pytest.raises(AuthenticationFailed, match="SCRAM-SHA-512"):
        server.step(final)
    assert server.reason == "unknown user" and server.username == "mallory"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"garbage",
        b"p=tls-unique,,n=user,r=abc",  # channel binding is not offered
        b"n,,n=user",
        b"n,,r=abc,n=user",
        b"n,,n=us=er,r=abc",  # '=' must be =3D
        b"n,,n=user,r=a,b",
        b"n,x=1,n=user,r=abc",
        b"\xff\xfe",
        b"n,,n=user,r=" + b"a" * 20000,
    ],
)
def test_malformed_client_first(message: bytes) -> None:
    cred = scram.derive("SCRAM-SHA-256", b"pencil")
    server = scram.ScramServer("SCRAM-SHA-256", {"user": cred}.get)
    with pytest.raises(AuthenticationFailed) as exc:
        server.step(message)
    assert str(exc.value) == INVALID.format("SCRAM-SHA-256")
    assert server.reason


def test_authzid_must_be_the_user() -> None:
    cred = scram.derive("SCRAM-SHA-256", b"pencil")
    server = scram.ScramServer("SCRAM-SHA-256", {"user": cred, "admin": cred}.get)
    with pytest.raises(AuthenticationFailed, match="authorization id that is different"):
        server.step(b"n,a=admin,n=user,r=abc")
    server = scram.ScramServer("SCRAM-SHA-256", {"user": cred}.get)
    client = Client("SCRAM-SHA-256", "user", b"pencil")
    assert server.step(client.final(server.step(client.first("n,a=user,")))) == client.expected


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f.replace(b"c=biws", b"c=eSws"),  # "y,," while client-first said "n,,"
        lambda f: f.replace(b",p=", b",x=1,p=", 1)[:-4] + b"AAA=",
        lambda f: f[: f.index(b",p=")] + b",p=AAAA",  # proof of the wrong length
        lambda f: f[: f.index(b",p=")] + b",p=!!!!",
        lambda f: f[: f.index(b",p=")],
    ],
)
def test_bad_client_final(mutate: Callable[[bytes], bytes]) -> None:
    cred = scram.derive("SCRAM-SHA-256", b"pencil")
    server = scram.ScramServer("SCRAM-SHA-256", {"user": cred}.get)
    client = Client("SCRAM-SHA-256", "user", b"pencil")
    final = client.final(server.step(client.first()))
    with pytest.raises(AuthenticationFailed):
        server.step(mutate(final))
    assert not server.complete


def test_client_final_with_another_nonce_fails() -> None:
    cred = scram.derive("SCRAM-SHA-256", b"pencil")
    server = scram.ScramServer("SCRAM-SHA-256", {"user": cred}.get)
    client = Client("SCRAM-SHA-256", "user", b"pencil")
    first = server.step(client.first())
    with pytest.raises(AuthenticationFailed):
        server.step(client.final(first, nonce=client.nonce + "other"))


def test_client_final_nonce_ending_with_the_exchanges_passes_as_in_kafka() -> None:
    # librdkafka 2.0.2 sends r=<client nonce><client nonce + server nonce>.
    cred = scram.derive("SCRAM-SHA-256", b"pencil")
    server = scram.ScramServer("SCRAM-SHA-256", {"user": cred}.get)
    client = Client("SCRAM-SHA-256", "user", b"pencil")
    first = server.step(client.first())
    combined = first.decode().split(",")[0][2:]
    assert server.step(client.final(first, nonce=client.nonce + combined)).startswith(b"v=")
    assert server.complete


def test_verify_password_and_credential_rules() -> None:
    cred = scram.derive("SCRAM-SHA-512", b"right", iterations=4096)
    assert len(cred.salt) == 32 and cred.iterations == 4096
    assert scram.verify_password(cred, b"right")
    assert not scram.verify_password(cred, b"wrong")
    assert "right" not in repr(cred) and cred.stored_key.hex() not in repr(cred)
    salted = hashlib.pbkdf2_hmac("sha512", b"right", cred.salt, 4096)
    assert scram.from_salted_password("SCRAM-SHA-512", salted, cred.salt, 4096) == cred
    assert scram.credential_error("SCRAM-SHA-256", 4096) is None
    assert scram.credential_error("SCRAM-SHA-1", 4096) == "Unknown SCRAM mechanism"
    assert scram.credential_error("SCRAM-SHA-256", 4095) == "Too few iterations"
    assert scram.credential_error("SCRAM-SHA-256", 16385) == "Too many iterations"


def test_plain() -> None:
    users = {"alice": b"pw"}

    def verify(user: str, password: bytes) -> bool:
        return users.get(user) == password

    assert authenticate_plain(b"\0alice\0pw", verify) == "alice"
    assert authenticate_plain(b"alice\0alice\0pw", verify) == "alice"
    cases = {
        b"\0alice\0bad": "Authentication failed: Invalid username or password",
        b"\0bob\0pw": "Authentication failed: Invalid username or password",
        b"bob\0alice\0pw": "authorization id that is different from username",
        b"\0\0pw": "username not specified",
        b"\0alice\0": "password not specified",
        b"alice\0pw": "expected 3 tokens, got 2",
        b"\0a\0b\0c": "expected 3 tokens, got 4",
        b"\0\xff\0pw": "Invalid username or password",
    }
    for token, message in cases.items():
        with pytest.raises(AuthenticationFailed, match=message) as exc:
            authenticate_plain(token, verify)
        assert "pw" not in str(exc.value).replace("password", "")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafka_python_scram_client(mechanism: str) -> None:
    """kafka-python's own SCRAM client (not ours) against the server, both outcomes."""
    from kafka.net.sasl.scram import ScramClient

    creds = {"alice": scram.derive(mechanism, "pässword".encode())}
    for password, ok in [("pässword", True), ("password", False)]:
        client = ScramClient("alice", password, mechanism)
        server = scram.ScramServer(mechanism, creds.get)
        client.process_server_first_message(server.step(client.first_message()))
        if ok:
            client.process_server_final_message(server.step(client.final_message()))
            assert server.complete
        else:
            with pytest.raises(AuthenticationFailed):
                server.step(client.final_message())
