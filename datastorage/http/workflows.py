"""Workflow-catalog endpoints (docs/api.md): parse -> `Catalog` -> respond.

Every rule lives in `datastorage.services.catalog`; this module validates the request against
the OpenAPI schemas. Catalog errors become problems in `http.errors`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from datastorage.domain.lifecycle import immutable_fields
from datastorage.http.audit import parse_uuid_path
from datastorage.http.authentication import recorded_by
from datastorage.http.body import read_json
from datastorage.http.context import AppContext, context, json_response
from datastorage.http.problems import not_found
from datastorage.services.catalog import ImmutableFields


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
    ctx = context(request)
    body = await _body(request, ctx)
    stored = await ctx.runtime.catalog.create(body, recorded_by=recorded_by(request.scope))
    return json_response(stored, 201)


async def list_workflows(request: Request) -> Response:
    ctx = context(request)
    params = ctx.validator.parameters("listWorkflows", request)
    rows, total = await ctx.runtime.catalog.list(params, params["limit"], params["offset"])
    return json_response(
        {"workflows": rows, "limit": params["limit"], "offset": params["offset"], "total": total}
    )


async def get_workflow(request: Request) -> Response:
    ctx = context(request)
    workflow_id = parse_uuid_path(request, "workflow_id")
    return json_response(await ctx.runtime.catalog.get(workflow_id))


async def list_versions(request: Request) -> Response:
    ctx = context(request)
    workflow_name = ctx.validator.parameters("listWorkflowVersions", request)["workflow_name"]
    versions = await ctx.runtime.catalog.versions(workflow_name)
    if not versions:
        raise not_found(f"no workflow named {workflow_name!r}")
    return json_response(
        {"workflow_name": workflow_name, "versions": versions, "total": len(versions)}
    )


async def update_workflow(request: Request) -> Response:
    ctx = context(request)
    workflow_id = parse_uuid_path(request, "workflow_id")
    body = await _body(request, ctx)
    # Immutable fields are named before the schema runs: a field the PATCH schema does not
    # list is "immutable", not "invalid".
    if not isinstance(body, dict):  # the catalog validates the fields; this is about shape
        ctx.validator.body("updateWorkflow", body)
    immutable = immutable_fields(body)
    if immutable:
        raise ImmutableFields(immutable)
    caller = recorded_by(request.scope)
    return json_response(await ctx.runtime.catalog.update(workflow_id, body, recorded_by=caller))


async def disable_workflow(request: Request) -> Response:
    ctx = context(request)
    workflow_id = parse_uuid_path(request, "workflow_id")
    body = await _optional_body(request, ctx)
    if not isinstance(body, dict):  # the catalog validates the fields; this is about shape
        ctx.validator.body("disableWorkflow", body)
    stored = await ctx.runtime.catalog.disable(
        workflow_id,
        reason=body.get("reason"),
        updated_by=body.get("updated_by"),
        recorded_by=recorded_by(request.scope),
    )
    return json_response(stored)


async def search_workflows(request: Request) -> Response:
    ctx = context(request)
    body = await _body(request, ctx)
    # The catalog records the search audit event through Runtime.spawn, after this response.
    caller = recorded_by(request.scope)
    return json_response(await ctx.runtime.catalog.search(body, recorded_by=caller))
