"""Authentication, authorization and the per-caller write limit at the HTTP edge (docs/auth.md).

`Authentication` is a pure ASGI middleware used when `DATASTORAGE_AUTH=kubernetes`. For every
request but the open paths (probes, the OpenAPI document) it takes the bearer token, asks the
`Authenticator` façade who the caller is and whether the matched route's permission is granted,
and answers the failures itself as problems:

- no token, or a token not accepted -> 401 `unauthenticated` + `WWW-Authenticate: Bearer`;
- permission denied -> 403 `forbidden` naming the verb and resource;
- the Kubernetes API unreachable with nothing cached -> 503 + `Retry-After` (fail closed: the
  application never sees the request, so nothing is stored or queued for it).

On success the reviewed `Identity` is put in the ASGI scope (`scope["state"]["identity"]`,
read with `current_identity`) for the handlers to record as `recorded_by`.

Routes are matched against the application's own route list, in order, exactly as Starlette's
router does (first full match). A request that matches no route is still authenticated, then
left to the application's 404/405. HEAD needs what GET needs.

Rate limit: a metered write route costs 1 and is charged here, before the handler runs. The
batch route costs its item count, which only its handler knows once the body is read: the
middleware leaves a meter in the scope, and the handler calls `charge_items(scope, n)` before
it stores or queues anything; that raises the 429 `Problem`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from datastorage.auth.authenticator import (
    Authenticator,
    AuthUnavailable,
    Forbidden,
    Identity,
    Unauthenticated,
)
from datastorage.auth.permissions import OPEN_PATHS, Metering, Permission
from datastorage.auth.ratelimit import RateLimiter
from datastorage.http.middleware import ROUTE_TEMPLATE_KEY
from datastorage.http.problems import Problem, problem_response, unavailable
from datastorage.metrics import AUTH_REQUESTS, RATE_LIMITED

log = logging.getLogger("datastorage.auth")

IDENTITY_KEY = "identity"
_UNKNOWN = object()
_METER_KEY = "rate_meter"


def current_identity(scope: Scope) -> Identity | None:
    """The reviewed caller of this request (None when auth is off)."""
    return scope.get("state", {}).get(IDENTITY_KEY)


def recorded_by(scope: Scope) -> str | None:
    """What a write stores as `recorded_by`: the reviewed username (None when auth is off)."""
    identity = current_identity(scope)
    return identity.username if identity is not None else None


def charge_items(scope: Scope, count: int) -> None:
    """Spend `count` units of the caller's write budget; raises the 429 problem when over it.
    A no-op when no limit applies (auth off, limit off, or a route that is not metered)."""
    meter = scope.get("state", {}).get(_METER_KEY)
    if meter is not None:
        meter(count)


def _bearer_token(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


class Authentication:
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        routes: Sequence[BaseRoute],
        limiter: RateLimiter | None = None,
        retry_after: int = 5,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self._routes = routes
        self.limiter = limiter
        self.retry_after = retry_after
        self._matchers: list[tuple[Any, frozenset[str], str]] | None = None
        self._memo: dict[tuple[str, str], str] = {}  # (method, path) of parameterless routes
        self._results = {
            result: AUTH_REQUESTS.labels(result)
            for result in ("allowed", "denied", "unauthenticated", "error")
        }

    def _compile(self) -> list[tuple[Any, frozenset[str], str]]:
        """(path regex, methods, template) per route, in the router's order."""
        routes = self._routes
        return [
            (route.path_regex, frozenset(route.methods or ()), route.path_format)
            for route in routes
            if isinstance(route, Route)
        ]

    def route_template(self, scope: Scope) -> str | None:
        """The path template of the route Starlette will dispatch this request to: the first
        route whose path and method both match (a path-only match is Starlette's 405)."""
        method, path = scope["method"], scope["path"]
        known = self._memo.get((method, path), _UNKNOWN)
        if known is not _UNKNOWN:
            return known
        if self._matchers is None:
            self._matchers = self._compile()
        for regex, methods, template in self._matchers:
            if (not methods or method in methods) and regex.match(path):
                if "{" not in template:  # parameterless: the path alone decides, memoise
                    self._memo[(method, path)] = template
                return template
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            identity, permission = await self._check(scope)
            if permission is not None and self.limiter is not None:
                self._meter(scope, identity, permission)
        except Problem as problem:
            scope[ROUTE_TEMPLATE_KEY] = self.route_template(scope)  # the metric's route label
            response = problem_response(problem, scope["path"])
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check(self, scope: Scope) -> tuple[Identity, Permission | None]:
        """Authenticate, then authorize the matched route; failures become problems."""
        try:
            identity = await self.authenticator.authenticate(_bearer_token(scope))
            template = self.route_template(scope)
            permission = None
            if template is not None:
                decision = await self.authenticator.authorize(identity, scope["method"], template)
                permission = decision.permission
        except (Unauthenticated, Forbidden, AuthUnavailable) as exc:
            raise self._refusal(exc, scope) from None
        self._results["allowed"].inc()
        scope.setdefault("state", {})[IDENTITY_KEY] = identity
        return identity, permission

    def _refusal(self, exc: Exception, scope: Scope) -> Problem:
        """The problem answering a failed check; counted and logged (never with the token)."""
        if isinstance(exc, Unauthenticated):
            result, level = "unauthenticated", logging.DEBUG
            problem = Problem(
                401,
                "unauthenticated",
                f"{exc}: send Authorization: Bearer <a Kubernetes token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif isinstance(exc, Forbidden):
            result, level, target = "denied", logging.INFO, exc.permission
            problem = Problem(
                403,
                "forbidden",
                str(exc),
                extra={
                    "verb": target.verb if target else None,
                    "resource": (target.resource or target.non_resource_path) if target else None,
                },
            )
        else:
            result, level = "error", logging.WARNING
            problem = unavailable(
                "the Kubernetes API cannot review this request right now; retry later",
                self.retry_after,
            )
        self._results[result].inc()
        log.log(level, "%d on %s %s: %s", problem.status, scope["method"], scope["path"], exc)
        return problem

    def _meter(self, scope: Scope, identity: Identity, permission: Permission) -> None:
        if permission.metering is Metering.REQUEST:
            self._charge(identity.username, 1)
        elif permission.metering is Metering.ITEMS:
            scope["state"][_METER_KEY] = self._meter_for(identity.username)

    def _meter_for(self, username: str) -> Callable[[int], None]:
        return lambda count: self._charge(username, count)

    def _charge(self, username: str, cost: int) -> None:
        assert self.limiter is not None
        admission = self.limiter.take(username, cost)
        if admission.allowed:
            return
        RATE_LIMITED.inc()
        log.debug("429 for %s: %d units refused", username, cost)
        raise Problem(
            429,
            "rate-limited",
            f"{username} is over its write budget ({self.limiter.burst} events at once, "
            f"{self.limiter.rate:g} per second); retry in {admission.retry_after} s",
            headers=self.limiter.headers(admission),
        )
