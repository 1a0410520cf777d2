"""Identities and permissions shared by the Kafka and HTTP listeners: SCRAM users, ACLs,
HTTP tokens, the audit log and the limit on failed authentications. Never imports the broker
or the API; storage never imports it."""

from __future__ import annotations

from ..config import LimitsConfig, SecurityConfig, Settings
from .acl import Authorizer
from .ratelimit import FailureLimiter
from .store import FILE_NAME, SecurityStore
from .tokens import TokenService


def no_users_message() -> str:
    return (
        "no users: create one with `python -m app users set NAME --mechanism SCRAM-SHA-256`"
        " (password from stdin)"
    )


class Security:
    def __init__(
        self,
        settings: SecurityConfig,
        limits: LimitsConfig,
        store: SecurityStore,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.store = store
        self.authorizer = Authorizer(
            store,
            enabled=settings.authorizer == "acl",
            super_users=settings.super_user_set,
            allow_everyone_if_no_acl=settings.allow_everyone_if_no_acl,
        )
        self.tokens = TokenService(store, max_ttl_s=settings.http_token_max_ttl_s)
        self.limiter = FailureLimiter(settings.sasl_failures_per_minute)

    @classmethod
    def open(cls, settings: Settings) -> Security:
        return cls(settings.security, settings.limits, SecurityStore(settings.data_dir / FILE_NAME))

    def close(self) -> None:
        self.store.close()
