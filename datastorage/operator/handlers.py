"""RemediationWorkflow custom resources -> catalog versions (docs/api.md).

`WorkflowReconciler` holds the rules and talks only to `datastorage.services.catalog.Catalog` (the same
service the HTTP API uses, so versioning, lifecycle and self-audit are written once);
`register()` wires it into a kopf registry. One reconcile serves create, update, resume and the
periodic resync, and it is level-based and idempotent (kopf delivers at least once, and every
pod of the Deployment runs a standalone operator): it reads the catalog, writes only what
differs, and returns the status it wants, which is patched only when it differs from the
object's current status. A resync of an unchanged object therefore writes nothing anywhere.

Decisions where the spec is silent:

- **Immutable change detection.** `status.specHash` is the SHA-256 of the spec without
  `lifecycle`, recorded for `status.syncedVersion` once that version is in the catalog. The
  same version with another hash is an `ImmutableFieldChanged` rejection: the whole change is
  rejected (a lifecycle edit made together with it too) until the spec is reverted or the version
  bumped; one Warning Event per rejected generation.
- **Same name+version already in the catalog** (created over HTTP, or by an earlier object):
  adopted when its content hash equals the spec's, else `Synced=False` reason `VersionConflict`.
- **Lifecycle** is level-based: the catalog status of the object's current version is driven to
  `spec.lifecycle` (default active) on every reconcile, including the periodic resync; a move
  the lifecycle rules forbid is `Synced=False` reason `InvalidTransition`.
- **Ready** means "the current version is in the catalog and active" (reason `Active`); else
  False with the catalog status (`Disabled`, `Deprecated`, `Archived`) or `NotInCatalog`.
- **Schema errors** (the catalog validates with the OpenAPI schemas) are `Synced=False` reason
  `InvalidSpec` plus a Warning Event; a database outage is a kopf TemporaryError (retried,
  nothing written to the object).
- **Authorship.** Catalog writes are made as `RemediationWorkflow/<namespace>/<name>`
  (`created_by`/`updated_by`); delete uses it to find a version created by this object whose id
  never reached the status.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from datastorage.config import Settings
from datastorage.metrics import WORKFLOW_RECONCILE
from datastorage.services.catalog import (
    Catalog,
    ContentHashMismatch,
    DuplicateVersion,
    InvalidTransitionError,
    InvalidWorkflow,
    WorkflowNotFound,
    content_hash,
)
from datastorage.store.errors import is_transient

log = logging.getLogger(__name__)

GROUP = "kubernaut.ai"
VERSION = "v1alpha1"
PLURAL = "remediationworkflows"
FINALIZER = "datastorage.kubernaut.ai/catalog"
DEFAULT_LIFECYCLE = "active"
RETRY_DELAY = 5.0  # seconds before kopf retries after a database outage

# Status keys this operator owns (kopf keeps its own under status.kopf, when it needs any).
OWNED_STATUS_KEYS = (
    "workflowId",
    "catalogStatus",
    "observedGeneration",
    "syncedVersion",
    "specHash",
    "catalogVersions",
    "conditions",
)


# -- pure rules ---------------------------------------------------------------------------------

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Values copied verbatim: user-chosen keys (customLabels, parameters) and the detected labels,
# which the catalog stores with their camelCase names.
_VERBATIM = {"customLabels", "detectedLabels", "parameters"}


def snake_case(name: str) -> str:
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def catalog_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The CR spec (camelCase) as a catalog create body (snake_case), without lifecycle."""
    body: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "lifecycle":
            continue
        if key not in _VERBATIM and isinstance(value, Mapping):  # labels.signalType etc.
            value = {snake_case(k): v for k, v in value.items()}
        body[snake_case(key)] = value
    return body


def spec_hash(spec: Mapping[str, Any]) -> str:
    """Fingerprint of everything that is immutable under one version (all but lifecycle)."""
    immutable = {k: v for k, v in spec.items() if k != "lifecycle"}
    canonical = json.dumps(immutable, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def expected_content_hash(spec: Mapping[str, Any]) -> str | None:
    given = spec.get("contentHash")
    if isinstance(given, str) and given:
        return given.lower()
    content = spec.get("content")
    return content_hash(content) if isinstance(content, str) else None


def author(namespace: str | None, name: str | None) -> str:
    return f"RemediationWorkflow/{namespace}/{name}"[:255]


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int | None,
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A condition; lastTransitionTime is kept while the status value stays the same."""
    status = "True" if ok else "False"
    since = previous.get("lastTransitionTime") if previous else None
    if not previous or previous.get("status") != status or not since:
        since = now_rfc3339()
    result = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


# -- the reconciler ------------------------------------------------------------------------------


@dataclass
class Reconciled:
    """What one reconcile decided: the status to have, Events to post, the metric result."""

    status: dict[str, Any]
    result: str
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)

    def status_changes(self, current: Mapping[str, Any]) -> dict[str, Any]:
        """The owned status keys whose value differs from `current` (empty: patch nothing)."""
        return {k: v for k, v in self.status.items() if current.get(k) != v}


@dataclass(frozen=True)
class WorkflowObject:
    """The parts of a RemediationWorkflow a reconcile reads."""

    namespace: str | None
    name: str | None
    generation: int | None
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WorkflowObject:
        meta = body.get("metadata") or {}
        return cls(
            namespace=meta.get("namespace"),
            name=meta.get("name"),
            generation=meta.get("generation"),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
        )

    @property
    def lifecycle(self) -> str:
        return self.spec.get("lifecycle") or DEFAULT_LIFECYCLE

    @property
    def actor(self) -> str:
        return author(self.namespace, self.name)

    def previous_condition(self, kind: str) -> Mapping[str, Any] | None:
        for item in self.status.get("conditions") or []:
            if isinstance(item, Mapping) and item.get("type") == kind:
                return item
        return None


class WorkflowReconciler:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def reconcile(self, obj: WorkflowObject) -> Reconciled:
        version = obj.spec.get("version")
        fingerprint = spec_hash(obj.spec)
        synced_here = obj.status.get("syncedVersion") == version and obj.status.get("workflowId")
        if synced_here and obj.status.get("specHash") not in (None, fingerprint):
            return self._immutable_change(obj)

        row = None
        result = "unchanged"
        if synced_here:
            try:
                row = await self.catalog.get(obj.status["workflowId"])
            except WorkflowNotFound:
                row = None  # gone from the catalog (e.g. a restored database): recreate below
        if row is None:
            found = await self._find_or_create(obj)
            if isinstance(found, Reconciled):
                return found
            row, result = found

        warnings: list[tuple[str, str]] = []
        synced = (True, "Synced", f"catalog version {row['workflow_id']} is {row['status']}")
        if row["status"] != obj.lifecycle:
            try:
                row = await self.catalog.update(
                    row["workflow_id"],
                    {
                        "status": obj.lifecycle,
                        "status_reason": f"spec.lifecycle of {obj.actor}",
                        "updated_by": obj.actor,
                    },
                )
                result = "updated" if result == "unchanged" else result
                synced = (
                    True,
                    "Synced",
                    f"catalog version {row['workflow_id']} is {row['status']}",
                )
            except InvalidTransitionError as exc:
                message = f"spec.lifecycle {obj.lifecycle!r} rejected: {exc}"
                synced = (False, "InvalidTransition", message)
                result = "rejected"
                if not self._already_reported(obj, "InvalidTransition"):
                    warnings.append(("InvalidTransition", message))
        status = self._synced_status(obj, row, fingerprint, synced)
        return Reconciled(status, result, warnings)

    async def _find_or_create(self, obj: WorkflowObject) -> tuple[dict, str] | Reconciled:
        body = catalog_spec(obj.spec)
        name, version = body.get("workflow_name"), body.get("version")
        for _ in range(2):  # a concurrent creator (another pod) may win once
            row = None
            if isinstance(name, str) and isinstance(version, str):
                row = await self.catalog.find_version(name, version)
            if row is not None:
                if row["content_hash"] != expected_content_hash(obj.spec):
                    return self._rejected(
                        obj,
                        "VersionConflict",
                        f"workflow {name!r} version {version!r} is already in the catalog "
                        f"({row['workflow_id']}) with different content; bump spec.version",
                    )
                return row, "adopted"
            try:
                row = await self.catalog.create(
                    {**body, "status": obj.lifecycle}, created_by=obj.actor
                )
                return row, "created"
            except DuplicateVersion:
                continue
            except (InvalidWorkflow, ContentHashMismatch) as exc:
                return self._rejected(obj, "InvalidSpec", f"the catalog refused the spec: {exc}")
        raise kopf.TemporaryError("concurrent creation of the same version", delay=RETRY_DELAY)

    def _immutable_change(self, obj: WorkflowObject) -> Reconciled:
        version = obj.spec.get("version")
        message = (
            f"spec changed under version {version!r}: only spec.lifecycle may change in place; "
            "revert the change or set a new spec.version (catalog left unchanged)"
        )
        status = {k: obj.status[k] for k in OWNED_STATUS_KEYS if k in obj.status}
        status["observedGeneration"] = obj.generation
        status["conditions"] = [
            obj.previous_condition("Ready")
            or condition("Ready", False, "NotInCatalog", "", obj.generation, None),
            condition(
                "Synced",
                False,
                "ImmutableFieldChanged",
                message,
                obj.generation,
                obj.previous_condition("Synced"),
            ),
        ]
        warnings = (
            []
            if self._already_reported(obj, "ImmutableFieldChanged")
            else [("ImmutableFieldChanged", message)]
        )
        return Reconciled(status, "rejected", warnings)

    def _rejected(self, obj: WorkflowObject, reason: str, message: str) -> Reconciled:
        """A spec the catalog cannot take: nothing written to the catalog."""
        status = {k: obj.status[k] for k in OWNED_STATUS_KEYS if k in obj.status}
        status["observedGeneration"] = obj.generation
        status["conditions"] = [
            condition(
                "Ready",
                False,
                "NotInCatalog",
                f"version {obj.spec.get('version')!r} is not in the catalog",
                obj.generation,
                obj.previous_condition("Ready"),
            ),
            condition(
                "Synced", False, reason, message, obj.generation, obj.previous_condition("Synced")
            ),
        ]
        warnings = [] if self._already_reported(obj, reason) else [(reason, message)]
        return Reconciled(status, "rejected", warnings)

    @staticmethod
    def _already_reported(obj: WorkflowObject, reason: str) -> bool:
        """The same rejection of the same generation was reported before (no second Event)."""
        synced = obj.previous_condition("Synced")
        return bool(
            synced
            and synced.get("reason") == reason
            and obj.status.get("observedGeneration") == obj.generation
        )

    def _synced_status(
        self,
        obj: WorkflowObject,
        row: Mapping[str, Any],
        fingerprint: str,
        synced: tuple[bool, str, str],
    ) -> dict[str, Any]:
        workflow_id, version = row["workflow_id"], row["version"]
        versions = [
            dict(v) for v in obj.status.get("catalogVersions") or [] if isinstance(v, Mapping)
        ]
        if not any(v.get("workflowId") == workflow_id for v in versions):
            versions.append({"version": version, "workflowId": workflow_id})
        active = row["status"] == "active"
        return {
            "workflowId": workflow_id,
            "catalogStatus": row["status"],
            "observedGeneration": obj.generation,
            "syncedVersion": obj.spec.get("version"),
            "specHash": fingerprint,
            "catalogVersions": versions,
            "conditions": [
                condition(
                    "Ready",
                    active,
                    "Active" if active else row["status"].capitalize(),
                    f"{row['workflow_name']} {version} is {row['status']} in the catalog",
                    obj.generation,
                    obj.previous_condition("Ready"),
                ),
                condition(
                    "Synced",
                    synced[0],
                    synced[1],
                    synced[2],
                    obj.generation,
                    obj.previous_condition("Synced"),
                ),
            ],
        }

    async def finalize(self, obj: WorkflowObject) -> list[str]:
        """Disable every catalog version created from (or adopted by) this object; returns the
        ids disabled. Versions already deprecated or archived stay as they are."""
        ids = [
            v.get("workflowId")
            for v in obj.status.get("catalogVersions") or []
            if isinstance(v, Mapping)
        ]
        ids.append(obj.status.get("workflowId"))
        if not any(ids):
            found = await self._created_by_this_object(obj)
            ids.append(found)
        reason = f"{obj.actor} was deleted"
        disabled = []
        for workflow_id in dict.fromkeys(i for i in ids if i):
            try:
                row = await self.catalog.disable(workflow_id, reason=reason, updated_by=obj.actor)
            except WorkflowNotFound:
                continue
            except InvalidTransitionError as exc:
                log.info("%s: catalog version %s left as is: %s", obj.actor, workflow_id, exc)
                continue
            if row["status"] == "disabled":
                disabled.append(workflow_id)
        return disabled

    async def _created_by_this_object(self, obj: WorkflowObject) -> str | None:
        """A create whose id never reached the status (deleted right after creation)."""
        name, version = obj.spec.get("workflowName"), obj.spec.get("version")
        if not (isinstance(name, str) and isinstance(version, str)):
            return None
        row = await self.catalog.find_version(name, version)
        if row is not None and row.get("created_by") == obj.actor:
            return row["workflow_id"]
        return None


# -- kopf wiring ---------------------------------------------------------------------------------


def _temporary(exc: BaseException) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"database unavailable: {exc}", delay=RETRY_DELAY)


async def _reconcile(body: kopf.Body, patch: kopf.Patch, memo: Any, *, resync: bool) -> None:
    obj = WorkflowObject.from_body(body)
    if resync and obj.status.get("observedGeneration") != obj.generation:
        return  # a change in flight: the change handlers own it
    reconciler: WorkflowReconciler = memo.reconciler
    async with memo.locks[body.metadata.uid]:
        try:
            outcome = await reconciler.reconcile(obj)
        except Exception as exc:
            WORKFLOW_RECONCILE.labels("error").inc()
            if is_transient(exc):
                raise _temporary(exc) from exc
            raise
    changes = outcome.status_changes(obj.status)
    for key, value in changes.items():  # kopf applies the patch after the handler returns
        patch.status[key] = value
    for reason, message in outcome.warnings:
        kopf.warn(body, reason=reason, message=message)
    WORKFLOW_RECONCILE.labels(outcome.result).inc()
    wrote = bool(changes) or outcome.result in ("created", "adopted", "updated")
    log.log(
        logging.INFO if wrote else logging.DEBUG,
        "reconciled %s: %s%s",
        obj.actor,
        outcome.result,
        "" if changes else " (status unchanged)",
    )


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Attach the RemediationWorkflow handlers to `registry`."""
    resource = (GROUP, VERSION, PLURAL)

    async def on_change(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        await _reconcile(body, patch, memo, resync=False)

    kopf.on.create(*resource, registry=registry, id="create")(on_change)
    kopf.on.update(*resource, registry=registry, id="update", field="spec")(on_change)
    kopf.on.resume(*resource, registry=registry, id="resume")(on_change)

    if settings.operator_resync_interval > 0:

        async def on_resync(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
            await _reconcile(body, patch, memo, resync=True)

        kopf.timer(
            *resource,
            registry=registry,
            id="resync",
            interval=settings.operator_resync_interval,
            initial_delay=settings.operator_resync_interval,
        )(on_resync)

    async def on_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
        obj = WorkflowObject.from_body(body)
        try:
            disabled = await memo.reconciler.finalize(obj)
        except Exception as exc:
            WORKFLOW_RECONCILE.labels("error").inc()
            if is_transient(exc):
                raise _temporary(exc) from exc
            raise
        WORKFLOW_RECONCILE.labels("deleted").inc()
        log.info(
            "%s deleted: disabled catalog version(s) %s", obj.actor, ", ".join(disabled) or "none"
        )

    kopf.on.delete(*resource, registry=registry, id="finalize")(on_delete)


def new_locks() -> collections.defaultdict[str, asyncio.Lock]:
    """One asyncio.Lock per object uid: the change handlers and the resync timer take turns."""
    return collections.defaultdict(asyncio.Lock)
