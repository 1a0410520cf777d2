"""TLS server contexts for both listeners, reloaded in place on SIGHUP.

One `ssl.SSLContext` serves every handshake of a listener. OpenSSL copies the certificate
and key into each connection when its handshake starts, so loading new files into the same
context changes what new handshakes present while open connections keep theirs.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from .principal import user_principal

if TYPE_CHECKING:
    from app.config import SecurityConfig

_VERIFY = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _load(ctx: ssl.SSLContext, cfg: SecurityConfig) -> None:
    ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    if cfg.tls_client_auth != "none":
        ctx.load_verify_locations(cafile=cfg.tls_ca_file)


def server_context(cfg: SecurityConfig) -> ssl.SSLContext:
    """TLS 1.2 or later, the configured chain, client certificates per tls_client_auth."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Tickets would let a client resume a session made under the old certificate
    # after a reload; each connection does a full handshake instead.
    ctx.options |= ssl.OP_NO_TICKET
    _load(ctx, cfg)
    ctx.verify_mode = _VERIFY[cfg.tls_client_auth]
    return ctx


def reload(ctx: ssl.SSLContext, cfg: SecurityConfig) -> None:
    """Load the files again into the same context (new handshakes only).

    The files are first loaded into a scratch context: load_cert_chain with a certificate
    that does not match its key would leave the live context with the new certificate and
    the old key, failing every handshake. A bad file raises and changes nothing. CA
    certificates are added to the trust store; ones removed from the file stay trusted
    until the restart (OpenSSL cannot drop them from a store).
    """
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load(scratch, cfg)
    _load(ctx, cfg)


def _common_name(cert: dict[str, Any]) -> str | None:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def peer_principal(ssl_object: Any) -> str | None:
    """ "User:<subject CN>" of a verified client certificate, None without one."""
    if ssl_object is None:
        return None
    try:
        # A dict only for a certificate that verified against the CA; {} or None otherwise.
        cert = ssl_object.getpeercert()
    except (ValueError, ssl.SSLError):
        return None
    if not cert:
        return None
    cn = _common_name(cert)
    return user_principal(cn) if cn else None
