"""THE route -> Kubernetes permission table (docs/auth.md), the open paths, and route matching.

Routes are named by HTTP method and path template as Starlette serves them (and as the OpenAPI
document spells them): `("POST", "/api/v1/audit/events")`. Path parameter names do not matter
(`{event_id}` and `{event_id:event_id}` are the same template), so a renamed parameter cannot
silently drop a route out of the table. Routes of the log and compliance endpoints that are not served yet are listed so
that they are protected the day they appear.

Write routes are *metered*: they spend from the caller's rate budget (docs/auth.md), one unit per
request, or one per item for the batch route, whose cost is known only after its body is read.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

API_GROUP = "datastorage.kubernaut.ai"

# Reachable without a token: probes and the API description.
OPEN_PATHS = frozenset(
    {"/health", "/health/live", "/health/ready", "/openapi.json", "/openapi.yaml"}
)


class Metering(enum.Enum):
    NONE = "none"  # not rate limited
    REQUEST = "request"  # costs 1 per request, charged before the handler runs
    ITEMS = "items"  # costs the body's item count, charged by the handler (see http layer)


@dataclass(frozen=True)
class Permission:
    """What a SubjectAccessReview asks for one route."""

    verb: str
    resource: str = ""
    subresource: str = ""
    non_resource_path: str = ""  # set for non-resource URLs (/metrics); resource is then empty
    metering: Metering = Metering.NONE

    def describe(self) -> str:
        """`create auditevents`, `get auditevents/export`, `get /metrics` — for 403 details."""
        if self.non_resource_path:
            return f"{self.verb} {self.non_resource_path}"
        target = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {target}.{API_GROUP}"


def _p(verb: str, resource: str, subresource: str = "", metering=Metering.NONE) -> Permission:
    return Permission(verb, resource, subresource, metering=metering)


_AUDIT = "/api/v1/audit"
_WORKFLOWS = "/api/v1/workflows"

PERMISSIONS: dict[tuple[str, str], Permission] = {
    # Audit events (docs/api.md) and export (docs/compliance.md).
    ("POST", f"{_AUDIT}/events"): _p("create", "auditevents", metering=Metering.REQUEST),
    ("POST", f"{_AUDIT}/events/batch"): _p("create", "auditevents", metering=Metering.ITEMS),
    ("GET", f"{_AUDIT}/events"): _p("list", "auditevents"),
    ("GET", f"{_AUDIT}/event-types"): _p("list", "auditevents"),
    ("GET", f"{_AUDIT}/events/{{event_id}}"): _p("get", "auditevents"),
    ("GET", f"{_AUDIT}/export"): _p("get", "auditevents", "export"),
    # Notification audit (docs/api.md).
    ("POST", f"{_AUDIT}/notifications"): _p("create", "notifications", metering=Metering.REQUEST),
    ("GET", f"{_AUDIT}/notifications"): _p("list", "notifications"),
    # Workflow catalog (docs/api.md).
    ("GET", _WORKFLOWS): _p("list", "workflows"),
    ("GET", f"{_WORKFLOWS}/by-name/{{workflow_name}}/versions"): _p("list", "workflows"),
    ("POST", f"{_WORKFLOWS}/search"): _p("list", "workflows"),
    ("GET", f"{_WORKFLOWS}/{{workflow_id}}"): _p("get", "workflows"),
    ("POST", _WORKFLOWS): _p("create", "workflows"),
    ("PATCH", f"{_WORKFLOWS}/{{workflow_id}}"): _p("update", "workflows"),
    ("PATCH", f"{_WORKFLOWS}/{{workflow_id}}/disable"): _p("update", "workflows"),
    # Tamper-evident log (docs/tamper-evident-log.md).
    ("GET", f"{_AUDIT}/log/checkpoint"): _p("get", "auditlog"),
    ("GET", f"{_AUDIT}/log/proof/{{event_id}}"): _p("get", "auditlog"),
    ("GET", f"{_AUDIT}/log/consistency"): _p("get", "auditlog"),
    ("GET", f"{_AUDIT}/log/key"): _p("get", "auditlog"),
    # Legal holds (docs/compliance.md).
    ("GET", f"{_AUDIT}/legal-holds"): _p("list", "legalholds"),
    ("GET", f"{_AUDIT}/legal-holds/{{correlation_id}}"): _p("get", "legalholds"),
    ("PUT", f"{_AUDIT}/legal-holds/{{correlation_id}}"): _p("create", "legalholds"),
    ("DELETE", f"{_AUDIT}/legal-holds/{{correlation_id}}"): _p("delete", "legalholds"),
    # Operations.
    ("GET", "/api/v1/admin/dlq"): _p("get", "dlq"),
    ("GET", "/metrics"): Permission("get", non_resource_path="/metrics"),
}

_PARAMETER = re.compile(r"\{[^}]*\}")


def normalize_template(template: str) -> str:
    """A path template with its parameter names (and Starlette convertors) erased."""
    return _PARAMETER.sub("{}", template)


_BY_TEMPLATE: dict[tuple[str, str], Permission] = {
    (method, normalize_template(template)): permission
    for (method, template), permission in PERMISSIONS.items()
}


class UnmappedRoute(LookupError):
    """A served route has no entry in the table: a programming error, refused (fail closed)."""


_RESOLVED: dict[tuple[str, str], Permission] = {}  # (method, template as served) -> permission


def permission_for(method: str, template: str) -> Permission:
    """The permission a request needs; HEAD needs what GET needs."""
    permission = _RESOLVED.get((method, template))
    if permission is not None:
        return permission
    wanted = "GET" if method == "HEAD" else method
    permission = _BY_TEMPLATE.get((wanted, normalize_template(template)))
    if permission is None:
        raise UnmappedRoute(f"{method} {template}")
    _RESOLVED[(method, template)] = permission  # served templates are few: bounded
    return permission


def unmapped(routes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (method, template) pairs among `routes` that are neither open nor in the table."""
    missing = []
    for method, template in routes:
        if template in OPEN_PATHS or method in ("HEAD", "OPTIONS"):
            continue
        if (method, normalize_template(template)) not in _BY_TEMPLATE:
            missing.append((method, template))
    return missing
