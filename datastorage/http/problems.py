"""RFC 7807 problem responses: the one place an error becomes HTTP."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_BASE = "https://kubernaut.ai/problems/"
_TITLES = {
    "validation-error": "Request validation failed",
    "invalid-json": "Request body is not valid JSON",
    "not-found": "Resource not found",
    "not-yet-sequenced": "Event not yet in a signed checkpoint",
    "conflict": "Conflict with the stored state",
    "immutable-field": "Field cannot be changed",
    "invalid-transition": "Status transition not allowed",
    "payload-too-large": "Request body too large",
    "unsupported-media-type": "Unsupported media type",
    "method-not-allowed": "Method not allowed",
    "service-unavailable": "Service temporarily unavailable",
    "internal-error": "Internal server error",
    "unauthenticated": "Authentication required",
    "forbidden": "Permission denied",
    "rate-limited": "Too many writes",
}


class Problem(Exception):
    """Raise anywhere under http/ to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        field_errors: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.field_errors = field_errors
        self.headers = headers or {}
        self.extra = extra or {}


def problem_response(problem: Problem, instance: str) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + problem.slug,
        "title": _TITLES.get(problem.slug, problem.slug),
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    if problem.field_errors:
        body["field_errors"] = problem.field_errors
    body.update(problem.extra)
    return Response(
        orjson.dumps(body),
        status_code=problem.status,
        media_type="application/problem+json",
        headers=problem.headers,
    )


def validation_error(field_errors: dict[str, str], detail: str | None = None) -> Problem:
    count = len(field_errors)
    return Problem(
        400,
        "validation-error",
        detail or f"{count} field{'s' if count != 1 else ''} failed validation",
        field_errors=field_errors,
    )


def unavailable(detail: str, retry_after: int) -> Problem:
    return Problem(503, "service-unavailable", detail, headers={"Retry-After": str(retry_after)})


def not_found(detail: str) -> Problem:
    return Problem(404, "not-found", detail)


def conflict(detail: str, **extra: Any) -> Problem:
    return Problem(409, "conflict", detail, extra=extra)
