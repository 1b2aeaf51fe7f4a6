"""The one ASGI middleware around every request: request id, metrics, access log, 500 problem.

`RequestContext` is a plain ASGI middleware (no per-request object allocation beyond what it
needs). It sets the request id that every log line carries (`logs.request_id_var`), echoes it
in `X-Request-ID`, counts and times the request under its route template, logs server errors,
and turns an unhandled exception into a 500 problem that names the request id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datastorage.domain.events import new_event_id
from datastorage.http.problems import Problem, problem_response
from datastorage.logs import request_id_var
from datastorage.metrics import HTTP_DURATION, HTTP_REQUESTS

log = logging.getLogger("datastorage.http")


# Metric labels stay bounded whatever method a client sends.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The scope key under which a middleware that answers before the router runs (authentication's
# 401/403/429/503) leaves the route template it matched, so the request is counted under its
# route rather than as `unmatched`.
ROUTE_TEMPLATE_KEY = "datastorage.route_template"


class RequestContext:
    def __init__(self, app: ASGIApp, routes: dict[Any, str], draining: Any) -> None:
        self.app = app
        self.routes = routes  # endpoint -> path template, for metric labels
        self.draining = draining  # () -> bool: shutdown has begun
        self._children: dict[tuple[str, str, int], Any] = {}

    def _metrics(self, method: str, route: str, status: int) -> Any:
        """The request counter is counted here; returns the duration histogram to observe.
        Label children are looked up once per (method, route, status): labels() is costly."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(method, route, str(status)),
                HTTP_DURATION.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        return children[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        body_pending = False  # a body was announced and its last chunk not yet read
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:200]
            elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                body_pending = True
        request_id = request_id or new_event_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                extra = [header]
                if self.draining() or body_pending:
                    # Draining: clients stop reusing the connection, so when the listener
                    # closes no keep-alive connection is caught between a request and its
                    # response. An unread body (a route without one, a 413, a 415): the
                    # server would drop the connection after this response; say so.
                    extra.append((b"connection", b"close"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        async def receive_body() -> Message:
            nonlocal body_pending
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_pending = False
            return message

        try:
            await self.app(scope, receive_body, send_with_id)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not response_started:
                response = problem_response(
                    Problem(
                        500,
                        "internal-error",
                        "an unexpected error occurred; see the "
                        f"server log for request {request_id}",
                    ),
                    scope["path"],
                )
                await response(scope, receive_body, send_with_id)
        finally:
            route = (
                self.routes.get(scope.get("endpoint"))
                or scope.get(ROUTE_TEMPLATE_KEY)
                or "unmatched"
            )
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self._metrics(method, route, status).observe(elapsed)
            if log.isEnabledFor(logging.DEBUG) or status >= 500:
                log.log(
                    logging.WARNING if status >= 500 else logging.DEBUG,
                    "%s %s -> %d in %.1f ms",
                    scope["method"],
                    scope["path"],
                    status,
                    elapsed * 1000,
                )
            request_id_var.reset(token)
