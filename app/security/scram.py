"""SCRAM-SHA-256/512 (RFC 5802, RFC 7677) with stdlib hashlib/hmac: stored credentials and
a sans-I/O server. Only salted keys are kept, never the password."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .errors import AuthenticationFailed

MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
SALT_BYTES = 32
# A SCRAM message is a few hundred bytes; anything far larger is not one.
MAX_MESSAGE_BYTES = 16 * 1024


@dataclass(frozen=True)
class ScramCredential:
    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def __repr__(self) -> str:  # never print the keys (logs, tracebacks)
        return f"ScramCredential({self.mechanism}, iterations={self.iterations})"


def credential_error(mechanism: str, iterations: int) -> str | None:
    """Why Kafka (ScramControlManager) refuses such a credential, or None."""
    if mechanism not in MECHANISMS:
        return "Unknown SCRAM mechanism"
    if iterations < MIN_ITERATIONS:
        return "Too few iterations"
    if iterations > MAX_ITERATIONS:
        return "Too many iterations"
    return None


def _hmac(algorithm: str, key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, algorithm).digest()


def from_salted_password(
    mechanism: str, salted_password: bytes, salt: bytes, iterations: int
) -> ScramCredential:
    algorithm = MECHANISMS[mechanism]
    client_key = _hmac(algorithm, salted_password, b"Client Key")
    return ScramCredential(
        mechanism,
        salt,
        iterations,
        hashlib.new(algorithm, client_key).digest(),
        _hmac(algorithm, salted_password, b"Server Key"),
    )


def derive(
    mechanism: str, password: bytes, *, salt: bytes | None = None, iterations: int = MIN_ITERATIONS
) -> ScramCredential:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac(MECHANISMS[mechanism], password, salt, iterations)
    return from_salted_password(mechanism, salted, salt, iterations)


def verify_password(cred: ScramCredential, password: bytes) -> bool:
    other = derive(cred.mechanism, password, salt=cred.salt, iterations=cred.iterations)
    return hmac.compare_digest(other.stored_key, cred.stored_key) and hmac.compare_digest(
        other.server_key, cred.server_key
    )


def invalid_credentials(mechanism: str) -> AuthenticationFailed:
    """What Kafka's SaslServerAuthenticator tells a client whose exchange failed."""
    return AuthenticationFailed(
        "Authentication failed during authentication due to invalid credentials with SASL "
        f"mechanism {mechanism}"
    )


def _saslname_to_user(saslname: str) -> str:
    # RFC 5802 5.1: ',' and '=' travel as =2C and =3D; any other '=' is malformed.
    if saslname.replace("=2C", "").replace("=3D", "").count("="):
        raise ValueError("invalid saslname")
    return saslname.replace("=2C", ",").replace("=3D", "=")


def _printable(nonce: str) -> bool:
    return bool(nonce) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


def _b64(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"), validate=True)


# Keys the salts of unknown users derive from: stable within a process, so asking twice for
# one unknown user gives the same salt as it would for a real one.
_FAKE_SALT_KEY = secrets.token_bytes(32)


class ScramServer:
    """One SCRAM exchange: step(client-first) -> server-first, step(client-final) ->
    server-final. Every failure raises AuthenticationFailed with Kafka's message; `reason`
    then says why (safe to log, never sent)."""

    def __init__(
        self,
        mechanism: str,
        lookup: Callable[[str], ScramCredential | None],
        *,
        server_nonce: str | None = None,
    ) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"not a SCRAM mechanism: {mechanism}")
        self.mechanism = mechanism
        self._algorithm = MECHANISMS[mechanism]
        self._lookup = lookup
        self._server_nonce = server_nonce or secrets.token_urlsafe(24)
        self._state = "first"
        self.complete = False
        self.username: str | None = None
        self.reason = ""
        self._cred: ScramCredential | None = None
        self._known = False
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def step(self, client_message: bytes) -> bytes:
        state, self._state = self._state, "failed"
        try:
            if len(client_message) > MAX_MESSAGE_BYTES:
                raise ValueError("message too large")
            text = client_message.decode("utf-8")
            if state == "first":
                out = self._first(text)
                self._state = "final"
                return out
            if state == "final":
                out = self._final(text)
                self._state = "complete"
                self.complete = True
                return out
            raise ValueError(f"unexpected message in state {state}")
        except AuthenticationFailed as exc:
            self.reason = self.reason or str(exc)
            raise
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            self.reason = self.reason or f"malformed message: {exc}"
            raise invalid_credentials(self.mechanism) from None
        finally:
            if self._state != "final":
                self._cred = None  # keys are not kept past the exchange

    def _first(self, text: str) -> bytes:
        flag, sep, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not sep or not sep2 or flag not in ("n", "y"):
            raise ValueError("gs2 header must be n,, or y,, (no channel binding)")
        if authzid and not authzid.startswith("a="):
            raise ValueError("bad authzid")
        attrs = bare.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise ValueError("client-first must be n=user,r=nonce")
        user = _saslname_to_user(attrs[0][2:])
        self.username = user
        nonce = attrs[1][2:]
        if not user or not _printable(nonce):
            raise ValueError("empty user or bad nonce")
        # Extensions (Kafka's tokenauth among them) are ignored, as Kafka ignores unknown ones.
        for ext in attrs[2:]:
            key, eq, _ = ext.partition("=")
            if not eq or not key.isascii() or not key.isalpha():
                raise ValueError("extensions must be key=value")
        if authzid and _saslname_to_user(authzid[2:]) != user:
            self.reason = "authorization id differs from user"
            raise AuthenticationFailed(
                "Authentication failed: Client requested an authorization id that is "
                "different from username"
            )
        cred = self._lookup(user)
        self._known = cred is not None and cred.iterations >= MIN_ITERATIONS
        if cred is None or not self._known:
            # Same shape of answer as for a real user: the failure shows only at the end.
            salt = _hmac("sha256", _FAKE_SALT_KEY, f"{self.mechanism}\0{user}".encode())
            size = hashlib.new(self._algorithm).digest_size
            cred = ScramCredential(
                self.mechanism, salt, MIN_ITERATIONS, secrets.token_bytes(size), b""
            )
        self._cred = cred
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._nonce = nonce + self._server_nonce
        salt_b64 = base64.b64encode(cred.salt).decode()
        self._server_first = f"r={self._nonce},s={salt_b64},i={cred.iterations}"
        return self._server_first.encode()

    def _final(self, text: str) -> bytes:
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        attrs = without_proof.split(",")
        if (
            not sep
            or len(attrs) < 2
            or not attrs[0].startswith("c=")
            or not attrs[1].startswith("r=")
        ):
            raise ValueError("client-final must be c=...,r=...,p=...")
        if _b64(attrs[0][2:]) != self._gs2_header.encode():
            raise ValueError("channel binding differs from the gs2 header")
        # Kafka's ScramSaslServer checks only the ending, and librdkafka 2.0 (Debian's kcat)
        # sends its own nonce again before the combined one; the proof covers it either way.
        if not attrs[1][2:].endswith(self._nonce):
            raise ValueError("nonce does not end with the exchange's")
        proof = _b64(proof_b64)
        cred = self._cred
        assert cred is not None
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self._algorithm, cred.stored_key, auth_message)
        if len(proof) != len(signature):
            raise ValueError("proof has the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        stored = hashlib.new(self._algorithm, client_key).digest()
        if not hmac.compare_digest(stored, cred.stored_key) or not self._known:
            self.reason = "unknown user" if not self._known else "wrong password"
            raise invalid_credentials(self.mechanism)
        server_signature = _hmac(self._algorithm, cred.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)
