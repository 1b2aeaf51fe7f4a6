"""A database outage is absorbed by the DLQ and replayed; SQL proves nothing was lost."""

from __future__ import annotations

import uuid

import psycopg
from e2e_helpers import env_or_skip, event, eventually, run_shell


def test_outage_is_absorbed_and_replayed(http):
    database_url = env_or_skip("DATABASE_URL")
    stop, start = env_or_skip("E2E_DB_STOP"), env_or_skip("E2E_DB_START")
    correlation = f"e2e-outage-{uuid.uuid4()}"
    run_shell(stop)
    try:
        ids = set()

        def queued():
            response = http.post("/api/v1/audit/events", json=event(correlation_id=correlation))
            assert response.status_code == 202, response.text
            return response.json()["event_id"]

        ids.add(eventually(queued, timeout=60))
        for _ in range(19):
            ids.add(queued())
        batch = http.post(
            "/api/v1/audit/events/batch",
            json=[event(correlation_id=correlation) for _ in range(30)],
        )
        assert batch.status_code == 202
        ids |= set(batch.json()["event_ids"])
        ready = http.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    finally:
        run_shell(start)

    def all_stored_once():
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT event_id::text, count(*) FROM audit_events "
                "WHERE correlation_id = %s GROUP BY 1",
                (correlation,),
            ).fetchall()
        assert {r[0] for r in rows} == ids and {r[1] for r in rows} == {1}

    eventually(all_stored_once, timeout=90, interval=1)
