"""The one table that turns errors of the layers below into problems (RFC 7807).

Services, the store and the DLQ raise their own exceptions; handlers let them through and the
app's exception handler answers with `problem_for(exc)`. An exception type not listed here is
a bug (500, handled by the middleware).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from datastorage.config import Settings
from datastorage.dlq.queue import DLQError
from datastorage.domain.errors import InvalidInput, NotFound, NotYetSequenced
from datastorage.http.problems import (
    Problem,
    conflict,
    not_found,
    problem_response,
    unavailable,
    validation_error,
)
from datastorage.schemas import count_failure
from datastorage.services.audit import BatchConflict, EventConflict
from datastorage.services.catalog import (
    CatalogError,
    ContentHashMismatch,
    DuplicateVersion,
    ImmutableFields,
    InvalidTransitionError,
    InvalidWorkflow,
    WorkflowNotFound,
)
from datastorage.services.durable import WriteUnavailable
from datastorage.store.errors import Conflict, StoreUnavailable
from datastorage.store.workflows import API_COLUMNS


def _immutable(exc: ImmutableFields, settings: Settings) -> Problem:
    for field in exc.fields:
        # Only known names become metric labels: request keys are unbounded.
        count_failure(field if field in API_COLUMNS else "other", "immutable")
    return Problem(
        400,
        "immutable-field",
        str(exc),
        field_errors={
            field: "cannot be changed; create a new version instead" for field in exc.fields
        },
    )


def _content_hash(exc: ContentHashMismatch, settings: Settings) -> Problem:
    count_failure("content_hash", "mismatch")
    return validation_error(
        {"content_hash": f"does not match the SHA-256 of content ({exc.computed})"}
    )


_TABLE: dict[type[BaseException], Callable[[Exception, Settings], Problem]] = {
    InvalidInput: lambda exc, s: validation_error(exc.field_errors, exc.detail),
    InvalidWorkflow: lambda exc, s: validation_error(exc.field_errors),
    NotFound: lambda exc, s: not_found(str(exc)),
    WorkflowNotFound: lambda exc, s: not_found(str(exc)),
    EventConflict: lambda exc, s: conflict(str(exc), event_id=exc.event_id),
    Conflict: lambda exc, s: conflict(str(exc)),
    BatchConflict: lambda exc, s: Problem(
        409,
        "conflict",
        str(exc),
        field_errors={
            f"[{i}].event_id": "already stored with different content" for i in exc.indexes
        },
    ),
    DuplicateVersion: lambda exc, s: conflict(
        str(exc), workflow_name=exc.workflow_name, version=exc.version, workflow_id=exc.workflow_id
    ),
    ContentHashMismatch: _content_hash,
    ImmutableFields: _immutable,
    InvalidTransitionError: lambda exc, s: Problem(
        409,
        "invalid-transition",
        str(exc),
        extra={"current_status": exc.current, "target_status": exc.target},
    ),
    CatalogError: lambda exc, s: Problem(500, "internal-error", str(exc)),
    StoreUnavailable: lambda exc, s: unavailable(f"database unavailable: {exc}", s.retry_after),
    WriteUnavailable: lambda exc, s: unavailable(
        f"the write cannot be stored or queued right now: {exc}", s.retry_after
    ),
    DLQError: lambda exc, s: unavailable(f"DLQ unavailable: {exc}", s.retry_after),
    NotYetSequenced: lambda exc, s: Problem(
        404, "not-yet-sequenced", str(exc), headers={"Retry-After": str(exc.retry_after)}
    ),
}

HANDLED = tuple(_TABLE)


def problem_for(exc: Exception, settings: Settings) -> Problem:
    for kind in type(exc).__mro__:
        build = _TABLE.get(kind)
        if build is not None:
            return build(exc, settings)
    raise exc


async def handle(request: Request, exc: Exception) -> Response:
    """The app's exception handler for every type of `HANDLED`."""
    problem = problem_for(exc, request.app.state.ctx.settings)
    return problem_response(problem, request.url.path)
