"""`helm test` smoke check: write one audit event, read it back by its id (standard library only).

Run by the chart's test Pod with SMOKE_URL set to the release's Service URL and, when the
service authenticates callers, SMOKE_TOKEN_FILE naming the Pod's projected service-account
token; exits non-zero with a line saying what failed.
"""

import json
import os
import sys
import time
import urllib.error
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


def headers():
    found = {"Content-Type": "application/json"}
    token_file = os.environ.get("SMOKE_TOKEN_FILE")
    if token_file:  # re-read on every call: the kubelet rotates it
        with open(token_file) as token:
            found["Authorization"] = "Bearer " + token.read().strip()
    return found


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method, headers=headers())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:  # 4xx/5xx: the problem document says why
        return error.code, json.loads(error.read() or b"null")


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
if os.environ.get("SMOKE_TOKEN_FILE") and not stored.get("recorded_by"):
    sys.exit(f"read back {event_id} without the authenticated writer in recorded_by: {stored}")
print(f"ok: wrote and read back audit event {event_id}")
