"""`helm test` smoke check: write one audit event, read it back by its id (standard library only).

Run by the chart's test Pod with SMOKE_URL set to the release's Service URL; exits non-zero
with a line saying what failed.
"""

import json
import os
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime

BASE = os.environ["SMOKE_URL"].rstrip("/")
correlation = f"helm-test-{uuid.uuid4()}"
event = {
    "version": "1.0",
    "event_type": "gateway.signal.received",
    "event_timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    "event_category": "gateway",
    "event_action": "received",
    "event_outcome": "success",
    "correlation_id": correlation,
    "event_data": {"source": "helm test"},
}


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        BASE + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")


status, created = call("POST", "/api/v1/audit/events", event)
if status != 201:
    sys.exit(f"write answered {status} (201 expected: is PostgreSQL up?): {created}")
event_id = created["event_id"]
for _ in range(10):
    status, stored = call("GET", f"/api/v1/audit/events/{event_id}")
    if status == 200:
        break
    time.sleep(1)
if stored.get("correlation_id") != correlation:
    sys.exit(f"read back {event_id}: got {stored}")
print(f"ok: wrote and read back audit event {event_id}")
