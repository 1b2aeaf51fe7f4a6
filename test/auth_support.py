"""Helpers for the auth tests: a settable clock, JWT-shaped tokens, and a small guarded app.

`guarded_app` serves every route of the permission table (the application's real route paths
and convertors where the route exists today, the table's template otherwise) with one echo
endpoint behind the `Authentication` middleware, so the same assertions can later be run
against the real application.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from datastorage.auth.permissions import OPEN_PATHS, PERMISSIONS, normalize_template
from datastorage.auth.ratelimit import RateLimiter
from datastorage.http.authentication import Authentication, charge_items, current_identity
from datastorage.http.problems import Problem, problem_response


class ManualClock:
    """A clock the test moves by hand (serves as monotonic and as wall clock)."""

    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def jwt_with_exp(exp: float, subject: str) -> str:
    """A token shaped like a JWT (unsigned: only the stand-in's table says who it is)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part({'sub': subject, 'exp': int(exp)})}.c2lnbmF0dXJl"


@dataclass
class Handled:
    """What reached the application behind the middleware."""

    calls: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, user

    def by(self, username: str) -> int:
        return sum(1 for _, _, user in self.calls if user == username)


def served_routes(endpoint: Any) -> list[Route]:
    from datastorage.app import ROUTES

    routes = [Route(route.path, endpoint, methods=sorted(route.methods)) for route in ROUTES]
    served = {
        (method, normalize_template(route.path_format))
        for route in routes
        for method in route.methods
    }
    for method, template in PERMISSIONS:
        if (method, normalize_template(template)) not in served:
            routes.append(Route(template, endpoint, methods=[method]))
    return routes


def guarded_app(authenticator: Any, limiter: RateLimiter | None = None) -> tuple[Any, Handled]:
    handled = Handled()

    async def endpoint(request: Request) -> Response:
        if request.url.path in OPEN_PATHS:
            return JSONResponse({"open": True})
        if request.url.path.endswith("/events/batch"):
            items = await request.json()
            charge_items(request.scope, len(items))  # before anything is stored
        identity = current_identity(request.scope)
        username = identity.username if identity else None
        handled.calls.append((request.method, request.url.path, username))
        status = 201 if request.method in ("POST", "PUT") else 200
        return JSONResponse({"recorded_by": username}, status_code=status)

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc, request.url.path)

    routes = served_routes(endpoint)
    app = Starlette(routes=routes, exception_handlers={Problem: problem})
    return Authentication(app, authenticator, routes=routes, limiter=limiter), handled
