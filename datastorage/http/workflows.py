"""Workflow-catalog endpoints (SPEC §6, §6.1): parse -> `Catalog` -> respond.

Every rule lives in `datastorage.catalog`; this module validates the request against the
OpenAPI schemas and turns catalog errors into problems, in one place (`_problem_for`).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from datastorage.catalog import (
    CatalogError,
    ContentHashMismatch,
    DuplicateVersion,
    ImmutableFields,
    InvalidTransitionError,
    InvalidWorkflow,
    WorkflowNotFound,
)
from datastorage.domain.lifecycle import immutable_fields
from datastorage.http.audit import parse_uuid_path
from datastorage.http.context import AppContext, json_response
from datastorage.http.middleware import read_json
from datastorage.http.problems import (
    Problem,
    conflict,
    not_found,
    unavailable,
    validation_error,
)
from datastorage.schemas import count_failure
from datastorage.store.errors import StoreUnavailable
from datastorage.store.workflows import API_COLUMNS


def _problem_for(exc: CatalogError) -> Problem:
    if isinstance(exc, WorkflowNotFound):
        return not_found(str(exc))
    if isinstance(exc, DuplicateVersion):
        return conflict(
            str(exc),
            workflow_name=exc.workflow_name,
            version=exc.version,
            workflow_id=exc.workflow_id,
        )
    if isinstance(exc, ContentHashMismatch):
        count_failure("content_hash", "mismatch")
        return validation_error(
            {"content_hash": f"does not match the SHA-256 of content ({exc.computed})"}
        )
    if isinstance(exc, ImmutableFields):
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
    if isinstance(exc, InvalidTransitionError):
        return Problem(
            409,
            "invalid-transition",
            str(exc),
            extra={"current_status": exc.current, "target_status": exc.target},
        )
    if isinstance(exc, InvalidWorkflow):
        return validation_error(exc.field_errors)
    return Problem(500, "internal-error", str(exc))


async def _call(ctx: AppContext, call: Awaitable[Any]) -> Any:
    """Await a catalog call, mapping its errors and database unavailability to problems."""
    try:
        return await call
    except CatalogError as exc:
        raise _problem_for(exc) from exc
    except StoreUnavailable as exc:
        raise unavailable(f"database unavailable: {exc}", ctx.settings.retry_after) from exc


def _context(request: Request) -> AppContext:
    return request.app.state.ctx


async def _body(request: Request, ctx: AppContext) -> Any:
    return await read_json(request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth)


async def _optional_body(request: Request, ctx: AppContext) -> Any:
    """The body, or {} when the request has none (the disable endpoint's body is optional).

    "None" is read from the framing: Content-Length 0; HTTP/1.x with neither Content-Length
    nor Transfer-Encoding; or (HTTP/2, where neither is required) no Content-Type either.
    """
    headers = request.headers
    declared = headers.get("content-length")
    if declared == "0":
        return {}
    if declared is None and "transfer-encoding" not in headers:
        http1 = str(request.scope.get("http_version", "1.1")).startswith("1")
        if http1 or "content-type" not in headers:
            return {}
    return await _body(request, ctx)


# Request bodies are validated by the catalog (the operator calls it too), once per request.


async def create_workflow(request: Request) -> Response:
    ctx = _context(request)
    body = await _body(request, ctx)
    stored = await _call(ctx, ctx.catalog.create(body))
    return json_response(stored, 201)


async def list_workflows(request: Request) -> Response:
    ctx = _context(request)
    params = ctx.validator.parameters("listWorkflows", request)
    rows, total = await _call(ctx, ctx.catalog.list(params, params["limit"], params["offset"]))
    return json_response(
        {"workflows": rows, "limit": params["limit"], "offset": params["offset"], "total": total}
    )


async def get_workflow(request: Request) -> Response:
    ctx = _context(request)
    workflow_id = parse_uuid_path(request, "workflow_id")
    return json_response(await _call(ctx, ctx.catalog.get(workflow_id)))


async def list_versions(request: Request) -> Response:
    ctx = _context(request)
    workflow_name = ctx.validator.parameters("listWorkflowVersions", request)["workflow_name"]
    versions = await _call(ctx, ctx.catalog.versions(workflow_name))
    if not versions:
        raise not_found(f"no workflow named {workflow_name!r}")
    return json_response(
        {"workflow_name": workflow_name, "versions": versions, "total": len(versions)}
    )


async def update_workflow(request: Request) -> Response:
    ctx = _context(request)
    workflow_id = parse_uuid_path(request, "workflow_id")
    body = await _body(request, ctx)
    # Immutable fields are named before the schema runs: a field the PATCH schema does not
    # list is "immutable", not "invalid".
    if not isinstance(body, dict):  # the catalog validates the fields; this is about shape
        ctx.validator.body("updateWorkflow", body)
    immutable = immutable_fields(body)
    if immutable:
        raise _problem_for(ImmutableFields(immutable))
    return json_response(await _call(ctx, ctx.catalog.update(workflow_id, body)))


async def disable_workflow(request: Request) -> Response:
    ctx = _context(request)
    workflow_id = parse_uuid_path(request, "workflow_id")
    body = await _optional_body(request, ctx)
    if not isinstance(body, dict):  # the catalog validates the fields; this is about shape
        ctx.validator.body("disableWorkflow", body)
    stored = await _call(
        ctx,
        ctx.catalog.disable(
            workflow_id, reason=body.get("reason"), updated_by=body.get("updated_by")
        ),
    )
    return json_response(stored)


async def search_workflows(request: Request) -> Response:
    ctx = _context(request)
    body = await _body(request, ctx)
    # The catalog records the search audit event through ctx.spawn, after this response.
    return json_response(await _call(ctx, ctx.catalog.search(body)))
