"""Cross-cutting HTTP concerns: request id, access log, metrics, exception -> problem, bodies.

`RequestContext` is a plain ASGI middleware (no per-request object allocation beyond what it
needs). `read_json` is what every handler uses to read a body: media type (415), size limit
(413, checked on Content-Length and while streaming) and the strict decoder.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datastorage.domain.events import new_event_id
from datastorage.http.problems import Problem, problem_response
from datastorage.http.validation import decode_json
from datastorage.metrics import HTTP_DURATION, HTTP_REQUESTS

log = logging.getLogger("datastorage.http")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


# Metric labels stay bounded whatever method a client sends.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


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
            route = self.routes.get(scope.get("endpoint"), "unmatched")
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


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_json(
    request: Request, limit: int, max_depth: int, *, check_depth: bool = True
) -> Any:
    media = _media_type(request)
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise Problem(
            415,
            "unsupported-media-type",
            f"Content-Type must be application/json, got {media or 'none'}",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem(413, "payload-too-large", f"request body exceeds {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "payload-too-large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    if not size:
        raise Problem(400, "invalid-json", "request body is empty")
    return decode_json(b"".join(chunks), max_depth, check_depth=check_depth)
