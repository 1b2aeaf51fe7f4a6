"""The façade the HTTP layer calls: who is this token, and may they do this (docs/auth.md).

`authenticate(token) -> Identity` and `authorize(identity, method, route_template) -> Decision`
raise the domain errors `Unauthenticated`, `Forbidden` and `AuthUnavailable`; turning them into
problems is the HTTP layer's job. Both go through the caches of `cache.py`:

- token reviews keyed by SHA-256 of the token and the audiences, kept `token_ttl` but never
  beyond the token's own `exp` when it is a JWT (read unverified: the TokenReview is what
  vouches for it, `exp` only shortens the cache). A rejected token is kept `denied_ttl` (capped
  by `token_ttl`) so a client stuck on a bad token costs the API server one review per 30 s;
- access reviews keyed by the whole review (user, uid, groups, extra, namespace, verb,
  resource, subresource or non-resource path), allowed `allowed_ttl`, denied `denied_ttl`.

An API server error caches nothing and surfaces as `AuthUnavailable` (the HTTP layer answers
503 + Retry-After: fail closed); a cached decision keeps answering through an outage until it
expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from datastorage.auth.cache import ReviewCache
from datastorage.auth.permissions import Permission, UnmappedRoute, permission_for
from datastorage.auth.reviews import (
    AccessReviewResult,
    Identity,
    KubeConnection,
    ReviewClient,
    ReviewUnavailable,
    TokenReviewResult,
    load_connection,
)
from datastorage.config import Settings

__all__ = [
    "AuthUnavailable",
    "Authenticator",
    "Decision",
    "Forbidden",
    "Identity",
    "Unauthenticated",
]


class Unauthenticated(Exception):
    """No token, or a token the API server did not accept (for our audiences)."""


class Forbidden(Exception):
    """The reviewed user lacks the permission the route needs."""

    def __init__(self, permission: Permission | None, detail: str) -> None:
        super().__init__(detail)
        self.permission = permission


class AuthUnavailable(Exception):
    """The API server could not answer and nothing was cached: fail closed."""


@dataclass(frozen=True)
class Decision:
    permission: Permission


class Reviewer(Protocol):
    async def review_token(self, token: str, audiences: Sequence[str]) -> TokenReviewResult: ...

    async def review_access(
        self, identity: Identity, namespace: str, permission: Permission
    ) -> AccessReviewResult: ...

    async def aclose(self) -> None: ...


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim (Unix seconds) of a JWT, or None when the token is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class Authenticator:
    def __init__(
        self,
        reviewer: Reviewer,
        *,
        namespace: str,
        audiences: Sequence[str] = (),
        token_ttl: float = 120.0,
        allowed_ttl: float = 300.0,
        denied_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.reviewer = reviewer
        self.namespace = namespace
        self.audiences = tuple(audiences)
        self.token_ttl = token_ttl
        self.allowed_ttl = allowed_ttl
        self.denied_ttl = denied_ttl
        self.wall_clock = wall_clock
        self.tokens: ReviewCache[TokenReviewResult] = ReviewCache("token", clock=clock)
        self.access: ReviewCache[AccessReviewResult] = ReviewCache("access", clock=clock)
        self._audience_suffix = "\n".join(self.audiences).encode()

    @classmethod
    def from_settings(cls, settings: Settings, **clocks: Callable[[], float]) -> Authenticator:
        """Loads the Kubernetes client configuration (raises KubeConfigError when unusable)."""
        connection: KubeConnection = load_connection(settings.kubeconfig)
        return cls(
            ReviewClient(connection, settings.auth_review_timeout),
            namespace=settings.auth_namespace or connection.namespace,
            audiences=settings.auth_audiences,
            token_ttl=settings.auth_token_ttl,
            allowed_ttl=settings.auth_allowed_ttl,
            denied_ttl=settings.auth_denied_ttl,
            **clocks,
        )

    async def aclose(self) -> None:
        await self.reviewer.aclose()

    async def authenticate(self, token: str) -> Identity:
        if not token:
            raise Unauthenticated("no bearer token")
        key = hashlib.sha256(token.encode() + b"\0" + self._audience_suffix).digest()
        result = await self.tokens.get(key, lambda: self._review_token(token))
        if result.identity is None:
            raise Unauthenticated("the bearer token was not accepted")
        return result.identity

    async def authorize(self, identity: Identity, method: str, route_template: str) -> Decision:
        try:
            permission = permission_for(method, route_template)
        except UnmappedRoute:
            raise Forbidden(None, f"{method} {route_template} has no permission mapping") from None
        key = (
            identity,
            self.namespace,
            permission.verb,
            permission.resource,
            permission.subresource,
            permission.non_resource_path,
        )
        result = await self.access.get(key, lambda: self._review_access(identity, permission))
        if not result.allowed:
            raise Forbidden(permission, f"{identity.username} may not {permission.describe()}")
        return Decision(permission)

    async def _review_token(self, token: str) -> tuple[TokenReviewResult, float]:
        try:
            result = await self.reviewer.review_token(token, self.audiences)
        except ReviewUnavailable as exc:
            raise AuthUnavailable(str(exc)) from None
        # The API server answers with the audiences the token is valid for among those asked.
        if (
            result.identity is not None
            and self.audiences
            and not set(result.audiences) & set(self.audiences)
        ):
            result = TokenReviewResult(None)
        if result.identity is None:
            return result, min(self.token_ttl, self.denied_ttl)
        ttl = self.token_ttl
        expiry = jwt_expiry(token)
        if expiry is not None:
            ttl = min(ttl, expiry - self.wall_clock())
        return result, ttl if math.isfinite(ttl) else 0.0

    async def _review_access(
        self, identity: Identity, permission: Permission
    ) -> tuple[AccessReviewResult, float]:
        try:
            result = await self.reviewer.review_access(identity, self.namespace, permission)
        except ReviewUnavailable as exc:
            raise AuthUnavailable(str(exc)) from None
        return result, self.allowed_ttl if result.allowed else self.denied_ttl
