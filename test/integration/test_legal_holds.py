"""Legal holds API (docs/compliance.md): validation names the field, 201 then 200 unchanged, 404
when not held, release, paging, and the self-audit events of each change."""

from __future__ import annotations

import uuid

import pytest

HOLDS = "/api/v1/audit/legal-holds"
EVENTS = "/api/v1/audit/events"


def _correlation() -> str:
    return f"incident-{uuid.uuid4().hex[:12]}"


def _hold_events(api, correlation_id: str) -> list[dict]:
    response = api.get(EVENTS, params={"correlation_id": correlation_id, "order": "asc"})
    assert response.status_code == 200, response.text
    return [e for e in response.json()["data"] if e["event_type"].startswith("datastorage.legal")]


def test_place_then_place_again_then_release(api):
    cid = _correlation()

    placed = api.put(f"{HOLDS}/{cid}", json={"reason": "case 42 opened", "case_id": "CASE-42"})
    assert placed.status_code == 201, placed.text
    hold = placed.json()
    assert hold["correlation_id"] == cid
    assert (hold["reason"], hold["case_id"], hold["placed_by"]) == (
        "case 42 opened",
        "CASE-42",
        None,
    )
    assert hold["placed_at"].endswith("Z")

    again = api.put(f"{HOLDS}/{cid}", json={"reason": "another reason"})
    assert again.status_code == 200, again.text
    assert again.json() == hold  # unchanged: the first placement stands

    fetched = api.get(f"{HOLDS}/{cid}")
    assert fetched.status_code == 200 and fetched.json() == hold

    released = api.delete(f"{HOLDS}/{cid}", params={"reason": "case closed"})
    assert released.status_code == 200, released.text
    body = released.json()
    assert body["correlation_id"] == cid and body["release_reason"] == "case closed"
    assert body["released_at"].endswith("Z") and body["released_by"] is None

    assert api.get(f"{HOLDS}/{cid}").status_code == 404
    missing = api.delete(f"{HOLDS}/{cid}", params={"reason": "again"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")

    events = _hold_events(api, cid)
    assert [e["event_type"] for e in events] == [
        "datastorage.legal_hold.placed",
        "datastorage.legal_hold.released",
    ]
    placed_event, released_event = events
    assert placed_event["resource_type"] == "legal_hold" and placed_event["resource_id"] == cid
    assert placed_event["event_data"]["reason"] == "case 42 opened"
    assert placed_event["event_data"]["case_id"] == "CASE-42"
    assert released_event["event_data"]["release_reason"] == "case closed"


def test_get_of_a_correlation_never_held_is_404(api):
    response = api.get(f"{HOLDS}/{_correlation()}")
    assert response.status_code == 404
    assert response.json()["type"].endswith("/not-found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": "x" * 1001}, "reason"),
        ({"reason": 7}, "reason"),
        ({"reason": "ok", "case_id": "c" * 256}, "case_id"),
        ({"reason": "ok", "case_id": 5}, "case_id"),
    ],
)
def test_invalid_hold_bodies_name_the_field(api, body, field):
    cid = _correlation()
    response = api.put(f"{HOLDS}/{cid}", json=body)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"].endswith("/validation-error")
    assert field in problem["field_errors"], problem
    assert api.get(f"{HOLDS}/{cid}").status_code == 404  # nothing placed


def test_too_long_correlation_id_and_missing_release_reason_name_the_field(api):
    too_long = api.put(f"{HOLDS}/{'c' * 256}", json={"reason": "r"})
    assert too_long.status_code == 400
    assert "correlation_id" in too_long.json()["field_errors"]

    cid = _correlation()
    assert api.put(f"{HOLDS}/{cid}", json={"reason": "r"}).status_code == 201
    no_reason = api.delete(f"{HOLDS}/{cid}")
    assert no_reason.status_code == 400
    assert "reason" in no_reason.json()["field_errors"]
    assert api.get(f"{HOLDS}/{cid}").status_code == 200  # still held


def test_list_pages_through_the_holds(api):
    mine = [_correlation() for _ in range(3)]
    for cid in mine:
        assert api.put(f"{HOLDS}/{cid}", json={"reason": "listed"}).status_code == 201
    seen: list[str] = []
    offset = 0
    while True:
        page = api.get(HOLDS, params={"limit": 2, "offset": offset})
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["pagination"]["limit"] == 2
        seen += [h["correlation_id"] for h in body["data"]]
        if not body["pagination"]["has_more"]:
            break
        offset += 2
    assert len(seen) == body["pagination"]["total"]
    assert [c for c in seen if c in mine] == mine  # oldest hold first
    bad = api.get(HOLDS, params={"limit": 0})
    assert bad.status_code == 400 and "limit" in bad.json()["field_errors"]
