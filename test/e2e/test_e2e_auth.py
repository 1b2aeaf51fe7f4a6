"""Who may call, and who wrote it (docs/auth.md), against a deployed stack that authenticates
callers: requests without a token are refused, a read-only account cannot write, and what the
suite's own account writes carries its name in `recorded_by`."""

from __future__ import annotations

import os

import pytest
import requests
from e2e_helpers import env_or_skip, event


@pytest.fixture(scope="module")
def token_user() -> str:
    env_or_skip("DATASTORAGE_TOKEN")
    return env_or_skip("E2E_TOKEN_USER")


def test_a_request_without_a_token_is_refused_and_probes_stay_open(base_url, token_user):
    refused = requests.post(base_url + "/api/v1/audit/events", json=event(), timeout=30)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert refused.json()["type"].endswith("/unauthenticated")
    assert requests.get(base_url + "/health/ready", timeout=30).status_code == 200
    assert requests.get(base_url + "/openapi.json", timeout=30).status_code == 200


def test_writes_record_the_callers_account_and_can_be_filtered_by_it(http, token_user):
    body = event()
    created = http.post("/api/v1/audit/events", json={**body, "recorded_by": "someone-else"})
    assert created.status_code == 201, created.text
    stored = http.get(f"/api/v1/audit/events/{created.json()['event_id']}").json()
    assert stored["recorded_by"] == token_user
    mine = http.get(
        "/api/v1/audit/events",
        params={"correlation_id": body["correlation_id"], "recorded_by": token_user},
    ).json()
    assert [e["event_id"] for e in mine["data"]] == [created.json()["event_id"]]
    nobody = http.get(
        "/api/v1/audit/events",
        params={"correlation_id": body["correlation_id"], "recorded_by": "someone-else"},
    ).json()
    assert nobody["data"] == []


def test_a_read_only_account_may_read_but_not_write(base_url, token_user):
    reader = {"Authorization": f"Bearer {env_or_skip('E2E_READER_TOKEN')}"}
    write = requests.post(
        base_url + "/api/v1/audit/events", json=event(), headers=reader, timeout=30
    )
    assert write.status_code == 403
    assert (write.json()["verb"], write.json()["resource"]) == ("create", "auditevents")
    read = requests.get(
        base_url + "/api/v1/audit/events", params={"limit": 1}, headers=reader, timeout=30
    )
    assert read.status_code == 200
    assert os.environ.get("DATASTORAGE_TOKEN") not in write.text
