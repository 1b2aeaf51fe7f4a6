"""create_app(settings) -> the Starlette application: routes, middleware, error handlers.

The lifespan opens and closes the process's `Runtime` (pool, DLQ, drain worker, services) and,
with `DATASTORAGE_AUTH=kubernetes`, the authenticator's connection to the Kubernetes API.

Middleware, outermost first: `RequestContext` (request id, access log, metrics, errors), CORS
when configured (it answers preflights itself: a browser sends no credentials on those), then
`Authentication`, so refusals (401/403/429/503) carry request ids and are logged and counted
like every other answer.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from datastorage.auth.authenticator import Authenticator
from datastorage.auth.ratelimit import limiter_from_settings
from datastorage.auth.reviews import KubeConfigError
from datastorage.config import ConfigError, Settings
from datastorage.http import (
    admin,
    audit,
    errors,
    export,
    health,
    holds,
    log,
    notifications,
    workflows,
)
from datastorage.http.authentication import Authentication
from datastorage.http.context import AppContext
from datastorage.http.middleware import RequestContext
from datastorage.http.problems import Problem, problem_response
from datastorage.http.validation import RequestValidator
from datastorage.runtime import Runtime
from datastorage.schemas import openapi_json, openapi_text


async def openapi_json_endpoint(request: Request) -> Response:
    return Response(openapi_json(), media_type="application/json")


async def openapi_yaml_endpoint(request: Request) -> Response:
    return Response(openapi_text(), media_type="application/yaml")


class SegmentExcept(Convertor[str]):
    """A path segment other than one literal: `{event_id}` is never `batch` and `{workflow_id}`
    never `search`, so another method on those literal paths is 405 with their Allow header,
    not a lookup of an id named "batch" or "search"."""

    def __init__(self, literal: str) -> None:
        self.regex = f"(?!{literal}$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("event_id", SegmentExcept("batch"))
register_url_convertor("workflow_id", SegmentExcept("search"))

ROUTES = [
    Route("/api/v1/audit/events", audit.create_event, methods=["POST"]),
    Route("/api/v1/audit/events", audit.query_events, methods=["GET"]),
    Route("/api/v1/audit/events/batch", audit.create_batch, methods=["POST"]),
    Route("/api/v1/audit/events/{event_id:event_id}", audit.get_event, methods=["GET"]),
    Route("/api/v1/audit/event-types", audit.event_types, methods=["GET"]),
    Route("/api/v1/audit/notifications", notifications.create_notification, methods=["POST"]),
    Route("/api/v1/audit/notifications", notifications.list_notifications, methods=["GET"]),
    Route("/api/v1/admin/dlq", admin.dlq_status, methods=["GET"]),
    # Workflow catalog: the literal paths (search, by-name) before /{workflow_id}.
    Route("/api/v1/workflows", workflows.create_workflow, methods=["POST"]),
    Route("/api/v1/workflows", workflows.list_workflows, methods=["GET"]),
    Route("/api/v1/workflows/search", workflows.search_workflows, methods=["POST"]),
    Route(
        "/api/v1/workflows/by-name/{workflow_name}/versions",
        workflows.list_versions,
        methods=["GET"],
    ),
    Route("/api/v1/workflows/{workflow_id:workflow_id}", workflows.get_workflow, methods=["GET"]),
    Route(
        "/api/v1/workflows/{workflow_id:workflow_id}", workflows.update_workflow, methods=["PATCH"]
    ),
    Route("/api/v1/workflows/{workflow_id}/disable", workflows.disable_workflow, methods=["PATCH"]),
    Route("/health", health.health, methods=["GET"]),
    Route("/health/ready", health.ready, methods=["GET"]),
    Route("/health/live", health.live, methods=["GET"]),
    Route("/metrics", health.metrics, methods=["GET"]),
    Route("/openapi.json", openapi_json_endpoint, methods=["GET"]),
    Route("/openapi.yaml", openapi_yaml_endpoint, methods=["GET"]),
    # Tamper-evident log (docs/tamper-evident-log.md).
    Route("/api/v1/audit/log/checkpoint", log.checkpoint, methods=["GET"]),
    Route("/api/v1/audit/log/proof/{event_id}", log.inclusion_proof, methods=["GET"]),
    Route("/api/v1/audit/log/consistency", log.consistency_proof, methods=["GET"]),
    Route("/api/v1/audit/log/key", log.verifier_key, methods=["GET"]),
    # Legal holds and export (docs/compliance.md).
    Route("/api/v1/audit/legal-holds", holds.list_holds, methods=["GET"]),
    Route("/api/v1/audit/legal-holds/{correlation_id}", holds.get_hold, methods=["GET"]),
    Route("/api/v1/audit/legal-holds/{correlation_id}", holds.place_hold, methods=["PUT"]),
    Route("/api/v1/audit/legal-holds/{correlation_id}", holds.release_hold, methods=["DELETE"]),
    Route("/api/v1/audit/export", export.export_events, methods=["GET"]),
]


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc, request.url.path)


def _allowed_methods(path: str) -> list[str]:
    methods: set[str] = set()
    for route in ROUTES:
        match, _ = route.matches({"type": "http", "path": path, "method": "GET"})
        if match.name != "NONE" and route.methods:
            methods |= route.methods
    return sorted(methods)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path
    if exc.status_code == 404:
        problem = Problem(404, "not-found", f"no route {path}")
    elif exc.status_code == 405:
        allow = ", ".join(_allowed_methods(path))
        problem = Problem(
            405,
            "method-not-allowed",
            f"{request.method} is not allowed on {path}; allowed: {allow}",
            headers={"Allow": allow},
        )
    else:
        problem = Problem(
            exc.status_code,
            "internal-error" if exc.status_code >= 500 else "validation-error",
            str(exc.detail),
        )
    return problem_response(problem, path)


def build_context(settings: Settings, clock: Callable[[], float] | None = None) -> AppContext:
    """The API server's runtime (DLQ drained in the background), request checks and, with
    `DATASTORAGE_AUTH=kubernetes`, the authenticator and the per-caller limiter. `clock`
    (tests): one settable clock for the review caches, token expiry and the buckets."""
    runtime = Runtime(settings, ensure_partitions=True, run_log=True)
    ctx = AppContext(
        runtime=runtime,
        validator=RequestValidator(runtime.validator),
        log=runtime.log,
    )
    if settings.auth == "kubernetes":
        clocks = {"clock": clock, "wall_clock": clock} if clock else {}
        try:
            ctx.authenticator = Authenticator.from_settings(settings, **clocks)
        except KubeConfigError as exc:
            raise ConfigError(f"DATASTORAGE_AUTH=kubernetes: {exc}") from None
        ctx.limiter = limiter_from_settings(settings, clock or time.monotonic)
    return ctx


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    ctx: AppContext = app.state.ctx
    try:
        async with ctx.runtime:
            yield
    finally:
        if ctx.authenticator is not None:
            await ctx.authenticator.aclose()


def create_app(settings: Settings, context: AppContext | None = None) -> Starlette:
    ctx = context or build_context(settings)
    # Metric label: the path template without convertor names (`{event_id}`).
    routes_by_endpoint: dict[Any, str] = {
        route.endpoint: re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path) for route in ROUTES
    }
    middleware = [
        Middleware(RequestContext, routes=routes_by_endpoint, draining=lambda: ctx.shutting_down)
    ]
    if settings.cors_allow_origins:
        # Off unless configured (security default): no Access-Control-* header otherwise.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_allow_origins),
                allow_methods=sorted({m for route in ROUTES for m in route.methods or ()}),
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID", "Retry-After", "RateLimit", "RateLimit-Policy"],
            )
        )
    if ctx.authenticator is not None:
        middleware.append(
            Middleware(
                Authentication,
                authenticator=ctx.authenticator,
                routes=ROUTES,
                limiter=ctx.limiter,
                retry_after=settings.retry_after,
            )
        )
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers={
            Problem: _problem,
            HTTPException: _http_exception,
            **dict.fromkeys(errors.HANDLED, errors.handle),
        },
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    return app
