"""Security defaults (issue 8): CORS off unless configured, no stack traces or SQL in any
response, no secrets in logs or responses, the request id on every request's log lines."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.testclient import TestClient
from support import ServerProcess, free_port, make_event

from datastorage.http.middleware import RequestContext

ALLOWED_ORIGIN = "https://ops.example"
EVENTS = "/api/v1/audit/events"
PASSWORD = f"S3cr3t-{secrets.token_hex(8)}"
# What an error response must never show: tracebacks, SQL, driver names, connection strings.
LEAKS = ("Traceback", 'File "', "SELECT ", "INSERT ", "psycopg", "postgresql://", "postgres@")


@pytest.fixture(scope="module")
def secret_role(contract_stack) -> str:
    """A database URL for a role that logs in with PASSWORD."""
    role = f"ds_secret_{secrets.token_hex(4)}"
    with psycopg.connect(contract_stack.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    return contract_stack.database_url.replace("postgres@", f"{role}:{PASSWORD}@", 1)


@pytest.fixture(scope="module")
def secret_server(secret_role, contract_stack, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server whose database URL carries a password, logging everything as JSON, with CORS
    configured for one origin."""
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": secret_role,
            "DATASTORAGE_DLQ_URL": contract_stack.redis_url,
            "DATASTORAGE_LOG_FORMAT": "json",
            "DATASTORAGE_LOG_LEVEL": "DEBUG",
            "DATASTORAGE_CORS_ALLOW_ORIGINS": f"{ALLOWED_ORIGIN}, https://other-allowed.example",
        },
        tmp_path_factory.mktemp("secret-server"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def outage_server(tmp_path_factory) -> Iterator[ServerProcess]:
    """A server whose password-carrying database URL points at nothing, and with no DLQ:
    it logs connection failures and answers 503."""
    url = f"postgresql://ds_app:{PASSWORD}@127.0.0.1:{free_port()}/ds?connect_timeout=1"
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": url,
            "DATASTORAGE_LOG_LEVEL": "DEBUG",
            "DATASTORAGE_DB_POOL_TIMEOUT": "0.5",
        },
        tmp_path_factory.mktemp("outage-server"),
    )
    yield server
    server.stop()


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url + EVENTS,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-request-id",
        },
    )


def test_cors_is_off_by_default(contract_stack):
    """Without configuration, neither a cross-origin request nor a preflight gets any
    Access-Control-* header."""
    simple = httpx.get(contract_stack.url + EVENTS, headers={"Origin": ALLOWED_ORIGIN})
    assert simple.status_code == 200
    assert cors_headers(simple) == {}
    response = preflight(contract_stack.url, ALLOWED_ORIGIN)
    assert cors_headers(response) == {}
    assert response.status_code == 405


def test_cors_allows_only_the_configured_origins(secret_server):
    """With DATASTORAGE_CORS_ALLOW_ORIGINS the configured origin gets the CORS headers (the
    API's methods, Content-Type and X-Request-ID allowed, X-Request-ID exposed); another
    origin gets no Access-Control-Allow-Origin."""
    url = secret_server.url
    simple = httpx.get(url + EVENTS, headers={"Origin": ALLOWED_ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    response = preflight(url, ALLOWED_ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    methods = response.headers["access-control-allow-methods"].replace(" ", "").split(",")
    assert {"GET", "POST", "PATCH"} <= set(methods)
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "content-type" in allowed and "x-request-id" in allowed
    second = httpx.get(url + EVENTS, headers={"Origin": "https://other-allowed.example"})
    assert second.headers["access-control-allow-origin"] == "https://other-allowed.example"

    for origin in ("https://evil.example", "https://ops.example.evil.example", "null"):
        simple = httpx.get(url + EVENTS, headers={"Origin": origin})
        assert "access-control-allow-origin" not in simple.headers, origin
        response = preflight(url, origin)
        assert "access-control-allow-origin" not in response.headers, origin
        assert response.status_code >= 400, origin


# Requests that make the server answer with an error, without any LEAKS word in the input.
PROVOKE: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", EVENTS, {"content": b'{"version": ', "headers": {"Content-Type": "application/json"}}),
    ("POST", EVENTS, {"json": {"version": 5}}),
    ("POST", EVENTS, {"json": make_event(duration_ms=2**70)}),
    ("POST", EVENTS, {"json": make_event(event_data={"a": "\x00"})}),
    ("POST", EVENTS, {"content": b"[" * 50_000 + b"]" * 50_000,
                      "headers": {"Content-Type": "application/json"}}),
    ("POST", EVENTS, {"content": b"x", "headers": {"Content-Type": "text/plain"}}),
    ("POST", EVENTS, {"json": {"pad": "x" * (2 << 20)}}),
    ("GET", EVENTS, {"params": {"since": "99999999999d"}}),
    ("GET", EVENTS, {"params": {"event_data": '{"a": "\\u0000"}'}}),
    ("GET", EVENTS, {"params": {"cursor": "bm90IGEgY3Vyc29y"}}),
    ("GET", EVENTS + "/" + str(uuid.uuid4()), {}),
    ("GET", "/api/v1/workflows/not-a-uuid", {}),
    ("DELETE", EVENTS, {}),
    ("GET", "/api/v1/nothing", {}),
    ("POST", "/api/v1/workflows/search", {"json": {"filters": {}, "top_k": 1.5}}),
    ("GET", "/api/v1/audit/notifications", {"params": {"limit": "x"}}),
    ("GET", "/health", {}),
    ("GET", "/health/ready", {}),
    ("GET", "/api/v1/admin/dlq", {}),
]  # fmt: skip


def assert_clean(response: httpx.Response, *secrets_: str) -> None:
    text = response.text + json.dumps(dict(response.headers))
    for word in (*LEAKS, *secrets_):
        assert word not in text, f"{word!r} in {response.request.method} {response.request.url}"


@pytest.mark.parametrize("server_name", ["contract", "outage"])
def test_error_responses_show_no_stack_trace_sql_or_secret(
    server_name, contract_stack, outage_server
):
    """Every error the server can be made to answer — 4xx, 413, 415, 503 and any 500 —
    is a problem document without a traceback, SQL, driver name, URL or password."""
    url = contract_stack.url if server_name == "contract" else outage_server.url
    statuses = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path, options in PROVOKE:
            response = client.request(method, path, **options)
            statuses.append(response.status_code)
            assert_clean(response, PASSWORD)
            if response.status_code >= 400 and not path.startswith("/health"):
                assert response.headers["content-type"] == "application/problem+json", path
    if server_name == "outage":
        assert 503 in statuses  # the database errors really were provoked


def test_the_500_handler_answers_generically():
    """An unexpected exception whose message holds SQL and a connection string becomes a
    generic internal-error problem that only names the request id."""

    async def boom(request):
        raise RuntimeError(f"SELECT * FROM t -- postgresql://u:{PASSWORD}@db/x")

    # Wired as create_app wires it: RequestContext inside Starlette's own error middleware.
    middleware = [Middleware(RequestContext, routes={}, draining=lambda: False)]
    app = Starlette(routes=[Route("/boom", boom)], middleware=middleware)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"X-Request-ID": "rid-500"})
    assert response.status_code == 500
    problem = response.json()
    assert problem["type"].endswith("/internal-error")
    assert "rid-500" in problem["detail"]
    assert PASSWORD not in response.text
    assert "SELECT" not in response.text and "RuntimeError" not in response.text


def log_entries(server: ServerProcess) -> list[dict[str, Any]]:
    lines = server.log_path.read_text().splitlines()
    entries = []
    for line in lines:
        if line.strip():
            entries.append(json.loads(line))  # every line is JSON in the json format
    return entries


EXERCISE_PATHS = 10  # requests sent by one `exercise` call


def exercise(client: httpx.Client, request_id: str) -> list[httpx.Response]:
    """A mix of successes and failures, each with the given request id."""
    headers = {"X-Request-ID": request_id}
    event = make_event()
    calls = [
        client.post(EVENTS, json=event, headers=headers),
        client.post(EVENTS, json=event, headers=headers),  # same content: 200
        client.post(EVENTS, json={"version": 1}, headers=headers),
        client.get(EVENTS, params={"correlation_id": event["correlation_id"]}, headers=headers),
        client.get("/api/v1/workflows/not-a-uuid", headers=headers),
        client.post("/api/v1/workflows/search", json={"filters": {}}, headers=headers),
        client.get("/health/ready", headers=headers),
        client.get("/health", headers=headers),
        client.get("/api/v1/admin/dlq", headers=headers),
        client.get("/metrics", headers=headers),
    ]
    assert len(calls) == EXERCISE_PATHS
    return calls


def test_no_secret_in_logs_or_responses_and_request_ids_on_every_request_line(
    secret_server, outage_server
):
    """With a password in the database URL and DEBUG JSON logs: the password appears in no
    response and in no log line (start-up, requests, outage, shutdown); every log line
    written for a request carries its X-Request-ID, echoed in the response."""
    ids = {}
    for server in (secret_server, outage_server):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(3):
                request_id = f"rid-{uuid.uuid4().hex}"
                for response in exercise(client, request_id):
                    assert response.headers["x-request-id"] == request_id
                    assert PASSWORD not in response.text + json.dumps(dict(response.headers))
                ids[request_id] = server
            generated = client.get("/api/v1/nothing").headers["x-request-id"]
            assert uuid.UUID(generated)
            ids[generated] = server
    for server in (secret_server, outage_server):
        server.stop()  # shutdown logs too
        log = server.log_path.read_text()
        assert PASSWORD not in log
        assert PASSWORD.replace("-", "%2D") not in log

    entries = log_entries(secret_server)
    request_lines = [e for e in entries if e["logger"] == "datastorage.http"]
    assert request_lines, "DEBUG logs no request lines"
    for entry in request_lines:
        assert entry.get("request_id"), entry
    # Each request's access line carries that request's id: one line per request sent.
    for request_id, server in ids.items():
        if server is secret_server:
            access = [
                e for e in request_lines if e.get("request_id") == request_id and " -> " in e["msg"]
            ]
            expected = 1 if request_id.count("-") == 4 else EXERCISE_PATHS
            assert len(access) == expected, (request_id, access)
