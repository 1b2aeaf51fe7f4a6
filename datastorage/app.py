"""create_app(settings) -> the Starlette application; the lifespan wires pool, DLQ, drain worker.

Start-up never waits for PostgreSQL: the pool opens in the background so a pod that starts
during a database outage serves (degraded) and queues writes in the DLQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from datastorage.audit import AuditWriter
from datastorage.catalog import Catalog
from datastorage.config import Settings
from datastorage.http import admin, audit, health, notifications, workflows
from datastorage.http.context import AppContext
from datastorage.http.middleware import RequestContext
from datastorage.http.problems import Problem, problem_response
from datastorage.http.validation import RequestValidator
from datastorage.schemas import openapi_json, openapi_text
from datastorage.store import partitions
from datastorage.store.pool import Database

log = logging.getLogger(__name__)


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


def consumer_name() -> str:
    """A DLQ consumer name unique per server process."""
    return f"{socket.gethostname()}-{os.getpid()}"


async def _ensure_partitions_at_start(settings: Settings) -> None:
    """Best effort: a database outage at start-up must not stop the server."""
    try:
        async with await psycopg.AsyncConnection.connect(
            settings.require_database_url(), autocommit=True, connect_timeout=3
        ) as conn:
            for month in partitions.window(settings.partition_premake):
                await partitions.ensure_month(conn, month, settings.partition_lock_timeout)
    except Exception as exc:  # noqa: BLE001 — logged; maintenance retries later
        log.warning("could not ensure partitions at start-up: %s", exc)


def build_context(settings: Settings) -> AppContext:
    db = Database(settings)
    writer = AuditWriter(settings, db)
    ctx = AppContext(settings=settings, db=db, validator=RequestValidator(settings), writer=writer)
    # The catalog writes its search audit events through ctx.spawn, after the response.
    ctx.catalog = Catalog(db, writer, validator=ctx.validator, spawn=ctx.spawn)
    return ctx


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    ctx: AppContext = app.state.ctx
    await ctx.db.open()
    await _ensure_partitions_at_start(ctx.settings)
    await _start_dlq(ctx)
    try:
        yield
    finally:
        # Work spawned after a response (search audit events) finishes before the DLQ closes.
        if ctx.background:
            await asyncio.wait(set(ctx.background), timeout=5)
        await _stop_dlq(ctx)
        for task in list(ctx.background):
            task.cancel()
        await ctx.db.close()


async def _start_dlq(ctx: AppContext) -> None:
    """Open the DLQ and start the drain worker (wired in by the DLQ module when configured)."""
    from datastorage import durability

    await durability.start(ctx, consumer_name())


async def _stop_dlq(ctx: AppContext) -> None:
    from datastorage import durability

    await durability.stop(ctx)


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
                allow_headers=["Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID"],
            )
        )
    app = Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers={Problem: _problem, HTTPException: _http_exception},
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    return app
