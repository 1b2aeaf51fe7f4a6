"""The route -> permission table covers every served route (docs/auth.md)."""

from __future__ import annotations

import pytest
import yaml

from datastorage.auth.permissions import (
    OPEN_PATHS,
    PERMISSIONS,
    Permission,
    UnmappedRoute,
    permission_for,
    unmapped,
)
from datastorage.schemas import openapi_text

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def openapi_routes() -> list[tuple[str, str]]:
    document = yaml.safe_load(openapi_text())
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    ]


def test_every_route_of_the_served_openapi_document_has_a_permission_or_is_open():
    routes = openapi_routes()
    assert len(routes) > 15  # the document was read
    assert unmapped(routes) == []


def test_a_route_added_without_a_mapping_is_reported():
    routes = [*openapi_routes(), ("POST", "/api/v1/audit/shred/{event_id}")]
    assert unmapped(routes) == [("POST", "/api/v1/audit/shred/{event_id}")]


def test_every_route_the_application_serves_has_a_permission_or_is_open():
    from datastorage.app import ROUTES

    served = [(m, r.path_format) for r in ROUTES for m in r.methods]
    assert unmapped(served) == []


def test_open_paths_are_exactly_the_probes_and_the_api_description():
    assert {
        "/health",
        "/health/live",
        "/health/ready",
        "/openapi.json",
        "/openapi.yaml",
    } == OPEN_PATHS
    assert not {template for _, template in PERMISSIONS} & OPEN_PATHS


@pytest.mark.parametrize(
    ("method", "template", "verb", "resource", "subresource"),
    [
        ("POST", "/api/v1/audit/events", "create", "auditevents", ""),
        ("POST", "/api/v1/audit/events/batch", "create", "auditevents", ""),
        ("GET", "/api/v1/audit/events", "list", "auditevents", ""),
        ("GET", "/api/v1/audit/event-types", "list", "auditevents", ""),
        ("GET", "/api/v1/audit/events/{event_id:event_id}", "get", "auditevents", ""),
        ("HEAD", "/api/v1/audit/events/{id}", "get", "auditevents", ""),
        ("GET", "/api/v1/audit/export", "get", "auditevents", "export"),
        ("POST", "/api/v1/audit/notifications", "create", "notifications", ""),
        ("GET", "/api/v1/audit/notifications", "list", "notifications", ""),
        ("GET", "/api/v1/workflows", "list", "workflows", ""),
        ("GET", "/api/v1/workflows/by-name/{name}/versions", "list", "workflows", ""),
        ("POST", "/api/v1/workflows/search", "list", "workflows", ""),
        ("GET", "/api/v1/workflows/{workflow_id:workflow_id}", "get", "workflows", ""),
        ("POST", "/api/v1/workflows", "create", "workflows", ""),
        ("PATCH", "/api/v1/workflows/{workflow_id}", "update", "workflows", ""),
        ("PATCH", "/api/v1/workflows/{workflow_id}/disable", "update", "workflows", ""),
        ("GET", "/api/v1/audit/log/checkpoint", "get", "auditlog", ""),
        ("GET", "/api/v1/audit/log/proof/{event_id}", "get", "auditlog", ""),
        ("GET", "/api/v1/audit/log/consistency", "get", "auditlog", ""),
        ("GET", "/api/v1/audit/log/key", "get", "auditlog", ""),
        ("GET", "/api/v1/audit/legal-holds", "list", "legalholds", ""),
        ("GET", "/api/v1/audit/legal-holds/{correlation_id}", "get", "legalholds", ""),
        ("PUT", "/api/v1/audit/legal-holds/{correlation_id}", "create", "legalholds", ""),
        ("DELETE", "/api/v1/audit/legal-holds/{correlation_id}", "delete", "legalholds", ""),
        ("GET", "/api/v1/admin/dlq", "get", "dlq", ""),
    ],
)
def test_the_spec_table_row(method, template, verb, resource, subresource):
    permission = permission_for(method, template)
    assert (permission.verb, permission.resource, permission.subresource) == (
        verb,
        resource,
        subresource,
    )


def test_metrics_is_a_non_resource_url():
    assert permission_for("GET", "/metrics") == Permission("get", non_resource_path="/metrics")
    assert permission_for("GET", "/metrics").describe() == "get /metrics"


def test_an_unknown_route_is_refused_not_guessed():
    with pytest.raises(UnmappedRoute):
        permission_for("DELETE", "/api/v1/audit/events/{event_id}")
