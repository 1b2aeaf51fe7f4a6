"""The workflow catalog (docs/api.md): the one place its rules run, for HTTP and the operator.

`Catalog` owns versioning (exactly one latest version per name, maintained under a per-name
advisory lock in the creating transaction), the lifecycle (transitions from
`domain.lifecycle`, applied under a row lock), the self-audit events of every change (inserted
into `audit_events` in the same transaction as the change, so a change and its event are
committed together or not at all) and search (candidates selected in SQL, scored and ordered by
`domain.scoring`, recorded as a `workflow.catalog.search_completed` event written through the
durable path in the background).

Inputs are API-shaped dicts (snake_case, the POST/PATCH bodies); outputs are the API's JSON
shape. Inputs are validated against the same OpenAPI schemas the HTTP layer uses, so a caller
that is not the HTTP layer (the operator) gets the same rules.

Decisions where the spec is silent:

- **What a PATCH changes.** Only fields whose value differs from the stored one count; when
  nothing differs (the same status included) the call is a no-op: no write, no `updated_at`
  bump, no audit event. `updated_by` alone is not a change.
- **Disabling** (PATCH to `disabled`, or the disable endpoint) stamps `disabled_at` with the
  transaction time and takes `disabled_by` from the body's `disabled_by`, else `updated_by`,
  and `disabled_reason` from `disabled_reason`, else `status_reason` (the disable endpoint's
  `reason`). Re-enabling (disabled → active) clears all three, even when the same PATCH names
  them. Leaving `disabled` for `deprecated` keeps them as history.
- **Creating with `status: disabled`** stamps the disable fields the same way (`created_by`
  stands in for `updated_by`); for any other initial status they are not stored.
- **The latest flag** is the derived state of a name, not a user edit: flipping it does not
  bump `updated_at` and writes no event of its own.
- **Search candidates** are the latest version of each name whose status is searched; an older
  active version does not stand in for a disabled latest one.
- **Search audit event `resource_id`** is the 16-hex-digit filters hash (also when a
  `remediation_id` is the correlation id), so searches with the same filters group together.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from datastorage.domain import lifecycle, scoring
from datastorage.metrics import AUDIT_TRACES
from datastorage.schemas import SchemaValidator
from datastorage.services.audit import SELF_ACTOR_ID, AuditService, self_audit_body
from datastorage.services.durable import WriteUnavailable
from datastorage.store import workflows as store
from datastorage.store.errors import Conflict
from datastorage.store.pool import Database
from datastorage.store.replica import ReadRouter

log = logging.getLogger(__name__)

__all__ = [
    "Catalog",
    "CatalogError",
    "ContentHashMismatch",
    "DuplicateVersion",
    "ImmutableFields",
    "InvalidTransitionError",
    "InvalidWorkflow",
    "WorkflowNotFound",
]

SEARCH_EVENT_TYPE = "workflow.catalog.search_completed"
DEFAULT_TOP_K = 10
DEFAULT_MIN_SCORE = 0.0


class CatalogError(Exception):
    """Base of the catalog's errors (each maps to one HTTP problem)."""


class WorkflowNotFound(CatalogError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow {workflow_id}")
        self.workflow_id = workflow_id


class DuplicateVersion(CatalogError):
    """(workflow_name, version) exists already; `workflow_id` names the stored one."""

    def __init__(self, workflow_name: str, version: str, workflow_id: str | None) -> None:
        super().__init__(f"workflow {workflow_name!r} version {version!r} already exists")
        self.workflow_name = workflow_name
        self.version = version
        self.workflow_id = workflow_id


class ContentHashMismatch(CatalogError):
    def __init__(self, given: str, computed: str) -> None:
        super().__init__(f"content_hash {given} is not the SHA-256 of content ({computed})")
        self.given = given
        self.computed = computed


class ImmutableFields(CatalogError):
    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            f"cannot change {', '.join(fields)}; only "
            f"{', '.join(sorted(lifecycle.MUTABLE_FIELDS))} may change (create a new version "
            "to change anything else)"
        )
        self.fields = fields


class InvalidTransitionError(CatalogError):
    def __init__(self, current: str, target: str) -> None:
        allowed = (
            sorted(lifecycle.allowed_targets(current)) if current in lifecycle.STATUSES else []
        )
        super().__init__(
            f"cannot change status from {current!r} to {target!r}"
            + (f" (allowed: {', '.join(allowed)})" if allowed else f" ({current!r} is final)")
        )
        self.current = current
        self.target = target


class InvalidWorkflow(CatalogError):
    """The input breaks the OpenAPI schema; `field_errors` maps field paths to messages."""

    def __init__(self, field_errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in field_errors.items()))
        self.field_errors = field_errors


Spawn = Callable[[Coroutine[Any, Any, Any]], None]


class Catalog:
    """The catalog service over a `Database`; audit events go through the `AuditService`.

    `validator` (a `schemas.SchemaValidator`) is built from the audit service's settings
    when not given; `spawn` runs the search audit write after the response (the server passes
    `Runtime.spawn` so shutdown can see the task); by default the catalog keeps the task.
    """

    def __init__(
        self,
        db: Database,
        audit: AuditService,
        *,
        validator: Any = None,
        spawn: Spawn | None = None,
        reads: ReadRouter | None = None,
    ) -> None:
        if validator is None:
            validator = SchemaValidator(audit.settings)
        self.db = db
        # Lists and searches may read a replica; a workflow by id or by version (which the
        # operator reconciles from, and which changes) always reads the primary.
        self.reads = reads or ReadRouter(audit.settings, db, None)
        self.audit = audit
        self.validator = validator
        self._spawn = spawn or self._keep_task
        self._tasks: set[asyncio.Task] = set()

    # -- versions -----------------------------------------------------------------------------

    async def create(
        self, spec: dict, *, created_by: str | None = None, recorded_by: str | None = None
    ) -> dict:
        # created_by is validated with the body so the argument obeys the same length limit.
        self._validate(
            "createWorkflow", spec if created_by is None else {**spec, "created_by": created_by}
        )
        record = new_version_record(spec, created_by)
        name, version = record["workflow_name"], record["version"]
        async with self.db.connection() as conn, conn.transaction():
            await store.lock_name(conn, name)
            existing = await store.find_version(conn, name, version)
            if existing is not None:
                raise DuplicateVersion(name, version, str(existing["workflow_id"]))
            try:
                workflow_id = await store.insert_workflow(conn, record)
            except Conflict as exc:  # only reachable if someone bypasses the name lock
                raise DuplicateVersion(name, version, None) from exc
            await self._refresh_latest(conn, name)
            row = await store.get_workflow(conn, workflow_id)
            await self._record_change(
                conn,
                "created",
                row,
                {
                    "content_hash": row["content_hash"],
                    "status": row["status"],
                    "is_latest_version": row["is_latest_version"],
                    "created_by": row["created_by"],
                },
                recorded_by,
            )
        self._count_event()
        return store.row_to_api(row)

    async def _refresh_latest(self, conn: Any, workflow_name: str) -> None:
        rows = await store.versions_of(conn, workflow_name)
        latest = lifecycle.latest_version((r["version"], r["creation_order"]) for r in rows)
        by_version = {r["version"]: r["workflow_id"] for r in rows}
        await store.set_latest(conn, workflow_name, by_version[latest])

    async def get(self, workflow_id: str) -> dict:
        key = _workflow_uuid(workflow_id)
        async with self.db.connection() as conn:
            row = await store.get_workflow(conn, key)
        if row is None:
            raise WorkflowNotFound(str(workflow_id))
        return store.row_to_api(row)

    async def find_version(self, workflow_name: str, version: str) -> dict | None:
        async with self.db.connection() as conn:
            row = await store.find_version(conn, workflow_name, version)
        return None if row is None else store.row_to_api(row)

    async def list(self, filters: dict, limit: int, offset: int) -> tuple[list[dict], int]:
        rows, total = await self.reads.read(
            lambda conn: store.list_workflows(conn, filters, limit, offset)
        )
        return [store.row_to_api(r) for r in rows], total

    async def versions(self, workflow_name: str) -> list[dict]:
        async with self.db.connection() as conn:
            rows = await store.versions_of(conn, workflow_name)
        # Sort by the domain rule; (version, creation_order) is unique per name.
        key = {(r["version"], r["creation_order"]): r for r in rows}
        ordered = sorted(key, key=lambda pair: lifecycle.version_sort_key(*pair), reverse=True)
        return [store.row_to_api(key[pair]) for pair in ordered]

    # -- lifecycle ----------------------------------------------------------------------------

    async def update(
        self, workflow_id: str, patch: dict, *, recorded_by: str | None = None
    ) -> dict:
        immutable = lifecycle.immutable_fields(patch)
        if immutable:
            raise ImmutableFields(immutable)
        self._validate("updateWorkflow", patch)
        key = _workflow_uuid(workflow_id)
        async with self.db.connection() as conn, conn.transaction():
            row = await store.get_workflow(conn, key, for_update=True)
            if row is None:
                raise WorkflowNotFound(str(workflow_id))
            changes = plan_update(row, patch)
            if not changes:
                return store.row_to_api(row)
            updated = await store.update_workflow(conn, key, changes)
            await self._record_change(
                conn, "updated", updated, {"changes": changed_fields(row, updated)}, recorded_by
            )
        self._count_event()
        return store.row_to_api(updated)

    async def disable(
        self,
        workflow_id: str,
        *,
        reason: str | None,
        updated_by: str | None,
        recorded_by: str | None = None,
    ) -> dict:
        self._validate("disableWorkflow", {"reason": reason, "updated_by": updated_by})
        key = _workflow_uuid(workflow_id)
        async with self.db.connection() as conn, conn.transaction():
            row = await store.get_workflow(conn, key, for_update=True)
            if row is None:
                raise WorkflowNotFound(str(workflow_id))
            if row["status"] == "disabled":
                return store.row_to_api(row)
            changes = plan_update(
                row, {"status": "disabled", "disabled_reason": reason, "updated_by": updated_by}
            )
            updated = await store.update_workflow(conn, key, changes)
            await self._record_change(
                conn,
                "disabled",
                updated,
                {
                    "previous_status": row["status"],
                    "reason": reason,
                    "disabled_by": updated["disabled_by"],
                    "changes": changed_fields(row, updated),
                },
                recorded_by,
            )
        self._count_event()
        return store.row_to_api(updated)

    # -- search -------------------------------------------------------------------------------

    async def search(
        self,
        request: dict,
        *,
        remediation_id: str | None = None,
        recorded_by: str | None = None,
    ) -> dict:
        """Rank the candidates (docs/api.md) and record the search in the background."""
        started = time.perf_counter()
        self._validate("searchWorkflows", request)
        filters = request["filters"]
        top_k = request.get("top_k", DEFAULT_TOP_K)
        min_score = request.get("min_score", DEFAULT_MIN_SCORE)
        include_disabled = request.get("include_disabled", False)
        statuses = searched_statuses(filters, include_disabled)
        rows = await self.reads.read(lambda conn: store.search_candidates(conn, filters, statuses))
        # The SQL selects by the same rule for speed; the domain function stays the authority.
        scored = [
            (row, scoring.score_workflow(filters, row))
            for row in rows
            if scoring.is_candidate(filters, row)
        ]
        ranked, total = scoring.rank(scored, min_score=min_score, top_k=top_k)
        response = {
            "workflows": [search_item(position, row, score) for position, row, score in ranked],
            "total_results": total,
            "filters": filters,
        }
        duration_ms = round((time.perf_counter() - started) * 1000)
        event = self.audit.event_from(
            search_event_body(
                request,
                response,
                duration_ms,
                remediation_id or request.get("remediation_id"),
            ),
            recorded_by,
        )
        self._spawn(self._write_search_event(event))
        return response

    async def _write_search_event(self, event: dict[str, Any]) -> None:
        """Background: a failure is logged, never raised into a task nobody awaits."""
        try:
            await self.audit.record_event(event)
        except WriteUnavailable as exc:
            log.warning("search audit event %s was not recorded: %s", event["event_id"], exc)
        except Exception:
            log.exception("search audit event %s was not recorded", event["event_id"])

    # -- helpers ------------------------------------------------------------------------------

    def _validate(self, operation_id: str, data: Any) -> None:
        errors = self.validator.body_errors(operation_id, data)
        if errors:
            raise InvalidWorkflow(errors)

    async def _record_change(
        self,
        conn: Any,
        action: str,
        row: Mapping[str, Any],
        data: dict[str, Any],
        recorded_by: str | None,
    ) -> None:
        """Insert the self-audit event in the caller's transaction (committed with the change);
        `recorded_by` is the authenticated caller who asked for the change (None for the
        operator, which no request reviewed)."""
        await self.audit.record_in(conn, change_event_body(action, row, data), recorded_by)

    @staticmethod
    def _count_event() -> None:
        AUDIT_TRACES.labels(SELF_ACTOR_ID, "success").inc()

    def _keep_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# -- pure rules (unit-tested without a database) ----------------------------------------------


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def new_version_record(spec: Mapping[str, Any], created_by: str | None) -> dict[str, Any]:
    """The row to insert for a create body (already schema-valid)."""
    computed = content_hash(spec["content"])
    given = spec.get("content_hash")
    if given is not None and given.lower() != computed:
        raise ContentHashMismatch(given, computed)
    record: dict[str, Any] = {column: spec.get(column) for column in store.INSERT_COLUMNS}
    author = created_by if created_by is not None else spec.get("created_by")
    record.update(
        {
            "content_hash": computed,
            "custom_labels": spec.get("custom_labels") or {},
            "detected_labels": spec.get("detected_labels") or {},
            "parameters": spec.get("parameters") or {},
            "status": spec.get("status") or "active",
            "created_by": author,
            "updated_by": author,
        }
    )
    if record["status"] == "disabled":
        record["disabled_at"] = store.NOW
        record["disabled_by"] = spec.get("disabled_by") or author
        record["disabled_reason"] = spec.get("disabled_reason") or spec.get("status_reason")
    else:
        record.update(disabled_at=None, disabled_by=None, disabled_reason=None)
    return record


def plan_update(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The column changes a PATCH makes to `current` ({} for a no-op).

    Raises InvalidTransitionError for a status move the lifecycle forbids.
    """
    source = current["status"]
    target = patch.get("status") or source
    try:
        moving = lifecycle.check_transition(source, target)
    except lifecycle.InvalidTransition as exc:
        raise InvalidTransitionError(source, target) from exc
    wanted = {
        field: patch[field]
        for field in ("status_reason", "disabled_by", "disabled_reason", "deprecation_notice")
        if field in patch
    }
    if moving:
        wanted["status"] = target
        if target == "disabled":
            wanted["disabled_at"] = store.NOW
            wanted["disabled_by"] = patch.get("disabled_by") or patch.get("updated_by")
            wanted["disabled_reason"] = patch.get("disabled_reason") or patch.get("status_reason")
        elif source == "disabled" and target == "active":
            wanted.update(disabled_at=None, disabled_by=None, disabled_reason=None)
    changes = {k: v for k, v in wanted.items() if v is store.NOW or current.get(k) != v}
    if changes and patch.get("updated_by") is not None:
        changes["updated_by"] = patch["updated_by"]
    return changes


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """{field: {old, new}} for every API field that differs (updated_at excluded)."""
    old, new = store.row_to_api(before), store.row_to_api(after)
    return {
        field: {"old": old[field], "new": new[field]}
        for field in store.API_COLUMNS
        if field != "updated_at" and old[field] != new[field]
    }


def searched_statuses(filters: Mapping[str, Any], include_disabled: bool) -> list[str]:
    statuses = list(filters.get("status") or ["active"])
    if include_disabled and "disabled" not in statuses:
        statuses.append("disabled")
    return statuses


def search_item(position: int, row: Mapping[str, Any], score: scoring.Score) -> dict[str, Any]:
    """One flat result of the search response (no nested workflow, no version key)."""
    return {
        "workflow_id": str(row["workflow_id"]),
        "title": row["name"],
        "description": row["description"],
        "signal_type": (row["labels"] or {}).get("signal_type"),
        "container_image": row["container_image"],
        "container_digest": row["container_digest"],
        "confidence": score.confidence,
        "label_boost": score.label_boost,
        "label_penalty": score.label_penalty,
        "final_score": score.final_score,
        "rank": position,
        "custom_labels": row["custom_labels"],
        "detected_labels": row["detected_labels"],
    }


def filters_hash(filters: Mapping[str, Any]) -> str:
    """First 16 hex digits of SHA-256 over the canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def search_event_body(
    request: Mapping[str, Any],
    response: Mapping[str, Any],
    duration_ms: int,
    remediation_id: str | None,
) -> dict[str, Any]:
    """The `workflow.catalog.search_completed` event as an API request body (docs/api.md)."""
    filters = request["filters"]
    digest = filters_hash(filters)
    return self_audit_body(
        event_type=SEARCH_EVENT_TYPE,
        category="workflow",
        action="search_completed",
        correlation_id=remediation_id or f"search-{digest}",
        resource_type="workflow_catalog",
        resource_id=digest,
        duration_ms=duration_ms,
        event_data={
            "query": {
                "filters": filters,
                "top_k": request.get("top_k", DEFAULT_TOP_K),
                "min_score": request.get("min_score", DEFAULT_MIN_SCORE),
                "include_disabled": request.get("include_disabled", False),
            },
            "results": {
                "total_found": response["total_results"],
                "returned": len(response["workflows"]),
                "workflows": [
                    {
                        "workflow_id": item["workflow_id"],
                        "title": item["title"],
                        "rank": item["rank"],
                        "final_score": item["final_score"],
                    }
                    for item in response["workflows"]
                ],
            },
            "duration_ms": duration_ms,
        },
    )


def change_event_body(
    action: str, row: Mapping[str, Any], data: Mapping[str, Any]
) -> dict[str, Any]:
    """A `datastorage.workflow.<action>` self-audit event as an API request body (docs/api.md)."""
    workflow_id = str(row["workflow_id"])
    return self_audit_body(
        event_type=f"datastorage.workflow.{action}",
        category="workflow",
        action=action,
        correlation_id=row["workflow_name"],
        resource_type="workflow",
        resource_id=workflow_id,
        event_data={
            "workflow_id": workflow_id,
            "workflow_name": row["workflow_name"],
            "version": row["version"],
            **data,
        },
    )


def _workflow_uuid(workflow_id: str) -> uuid.UUID:
    """A malformed id names no workflow (the HTTP layer answers 400 before getting here)."""
    try:
        return uuid.UUID(str(workflow_id))
    except ValueError as exc:
        raise WorkflowNotFound(str(workflow_id)) from exc
