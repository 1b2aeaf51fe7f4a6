"""1,000 fuzzed requests leave the server healthy (issue 8, acceptance 3).

Hypothesis draws the requests: a real route (path parameters random or valid), any method,
random query strings, headers and content types, and bodies that are random JSON, mutated
valid requests or random bytes. Afterwards: no response was a 5xx, /health is 200, the
server's RSS grew by less than 50 MB from after a warm-up, and the pool has no connection
left in use.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support import eventually, make_event

REQUESTS = 1000
RSS_GROWTH_LIMIT = 50 * 1024 * 1024

ROUTES = (
    "/api/v1/audit/events",
    "/api/v1/audit/events/batch",
    "/api/v1/audit/events/{id}",
    "/api/v1/audit/event-types",
    "/api/v1/audit/notifications",
    "/api/v1/admin/dlq",
    "/api/v1/workflows",
    "/api/v1/workflows/search",
    "/api/v1/workflows/by-name/{name}/versions",
    "/api/v1/workflows/{id}",
    "/api/v1/workflows/{id}/disable",
    "/health",
    "/health/ready",
    "/health/live",
    "/openapi.json",
    "/api/v1/nothing",
)
METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS", "HEAD")
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/problem+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
    "application/json; charset=latin-1",
)
QUERY_NAMES = (
    "correlation_id",
    "event_type",
    "event_category",
    "event_outcome",
    "since",
    "until",
    "event_data",
    "order",
    "limit",
    "offset",
    "cursor",
    "status",
    "workflow_name",
    "severity",
    "latest_only",
    "remediation_id",
    "unknown",
)

text = st.text(max_size=40)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=30,
)


@st.composite
def mutated_valid_bodies(draw: st.DrawFn) -> Any:
    """A valid event, batch, notification, workflow or search body with fields replaced."""
    base: Any = draw(
        st.sampled_from(
            [
                make_event(),
                [make_event(), make_event()],
                {"remediation_id": "r", "notification_id": "n", "recipient": "x", "channel": "email",
                 "message_summary": "m", "status": "sent", "sent_at": "2024-01-01T00:00:00Z"},
                {"workflow_name": "fuzz", "version": "1.0.0", "name": "n", "content": "c",
                 "labels": {"signal_type": "s", "severity": "low", "component": "*",
                            "environment": "*", "priority": "P3"}},
                {"filters": {"signal_type": "s", "severity": "low", "component": "c",
                             "environment": "e", "priority": "P3"}, "top_k": 3},
            ]
        )
    )  # fmt: skip
    target = base[0] if isinstance(base, list) else base
    for key in draw(st.lists(st.sampled_from(sorted(target)), max_size=3)):
        target[key] = draw(json_values)
    return base


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = st.one_of(
    st.none(),
    json_values.map(encode),
    mutated_valid_bodies().map(encode),
    st.binary(max_size=200),
    text.map(str.encode),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    path = draw(st.sampled_from(ROUTES))
    path = path.replace(
        "{id}", draw(st.sampled_from([str(uuid.uuid4()), "not-a-uuid", "%00", "%FF", "0"]))
    )
    path = path.replace("{name}", draw(st.sampled_from(["fuzz", "%27%3B--", "%E2%80%AE"])))
    params = draw(st.dictionaries(st.sampled_from(QUERY_NAMES), st.text(max_size=30), max_size=4))
    headers = {"X-Request-ID": f"fuzz-{draw(st.integers(0, 10**9))}"}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    for name, value in draw(
        st.dictionaries(
            st.sampled_from(["Accept", "Origin", "X-Forwarded-For", "Content-Encoding", "Range"]),
            # Printable ASCII without surrounding blanks: what HTTP/1.1 lets a client send.
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(
                str.strip
            ),
            max_size=2,
        )
    ).items():
        headers[name] = value
    return {
        "method": draw(st.sampled_from(METHODS)),
        "url": path,
        "params": params,
        "headers": headers,
        "content": draw(bodies),
    }


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def fire(client: httpx.Client, request: dict[str, Any]) -> httpx.Response:
    # Strings that are not valid in a URL are the client's problem, not the server's:
    # send the query string percent-encoded as UTF-8 (surrogates replaced).
    params = {k: v.encode("utf-8", "replace").decode() for k, v in request["params"].items()}
    return client.request(
        request["method"],
        request["url"],
        params=params,
        headers=request["headers"],
        content=request["content"],
    )


def run_fuzz(client: httpx.Client, count: int) -> tuple[int, list[str]]:
    """Send `count` hypothesis-drawn requests; return how many were sent and the 5xx ones."""
    sent = 0
    errors: list[str] = []
    previous: dict[str, Any] = {}

    @settings(
        max_examples=count,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(request=requests())
    def one(request: dict[str, Any]) -> None:
        nonlocal sent, previous
        shown = {**request, "content": (request["content"] or b"")[:80]}
        sent += 1
        try:
            response = fire(client, request)
        except httpx.TransportError as exc:  # a dropped connection is as bad as a 5xx
            errors.append(f"{type(exc).__name__} {shown} (after {previous})")
            return
        finally:
            previous = shown
        if response.status_code >= 500:
            errors.append(f"{response.status_code} {shown} {response.text[:300]}")

    one()
    return sent, errors


def test_a_thousand_fuzzed_requests_leave_the_server_healthy(contract_stack):
    """No 5xx, /health 200, RSS grows < 50 MB after warm-up, no pool connection leaked."""
    pid = contract_stack.server.proc.pid
    with httpx.Client(base_url=contract_stack.url, timeout=30) as client:
        run_fuzz(client, 100)
        baseline = rss_bytes(pid)
        sent, errors = run_fuzz(client, REQUESTS)
        grown = rss_bytes(pid) - baseline
        print(f"fuzz: {sent} requests, RSS {baseline / 2**20:.1f} MiB -> +{grown / 2**20:.1f} MiB")

        assert sent >= REQUESTS
        assert errors == [], f"{len(errors)} responses were 5xx:\n" + "\n".join(errors[:30])
        assert client.get("/health").status_code == 200
        assert grown < RSS_GROWTH_LIMIT, f"RSS grew by {grown / 2**20:.1f} MiB"

        def pool_idle() -> None:
            metrics = client.get("/metrics").text
            # The sample must be there (a missing one would read as 0) and be zero.
            assert 'datastorage_db_pool_connections{state="in_use"} 0.0' in metrics, [
                line for line in metrics.splitlines() if "pool_connections" in line
            ]

        eventually(pool_idle, timeout=15)
