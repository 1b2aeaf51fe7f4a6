"""Never lose an acknowledged event: real faults (PostgreSQL stopped, Redis killed, SIGTERM,
kill -9) against the server under Hypercorn; results checked with SQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid

import httpx
import psycopg
import pytest
import redis
from support import (
    REPO,
    RedisServer,
    ServerProcess,
    all_stored_once,
    eventually,
    make_event,
    stored_event_counts,
)

EVENTS = "/api/v1/audit/events"
BATCH = "/api/v1/audit/events/batch"
NOTIFICATIONS = "/api/v1/audit/notifications"


@pytest.fixture(params=["file", "redis"])
def dlq_url(request, tmp_path, redis_server):
    if request.param == "file":
        return f"file://{tmp_path / 'spool'}"
    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(url).flushdb()
    return url


def _server(database_url: str, dlq: str, tmp_path, **extra: str) -> ServerProcess:
    env = {
        "DATASTORAGE_DATABASE_URL": database_url,
        "DATASTORAGE_DLQ_URL": dlq,
        "DATASTORAGE_DB_POOL_TIMEOUT": "2",
        **extra,
    }
    return ServerProcess(env, tmp_path)


class Writers:
    """Threads that post single events until stopped, recording every status and the ids
    acknowledged with 201/202. A connection error (refused, reset) is retried; once the
    server is gone for good the threads just keep failing until stopped."""

    def __init__(self, base_url: str, correlation_id: str, threads: int) -> None:
        self.base_url = base_url
        self.correlation_id = correlation_id
        self.acked: set[str] = set()
        self.statuses: list[int] = []
        self.lost_answers = 0  # requests whose connection broke before an answer came
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write) for _ in range(threads)]

    def _write(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(
                        EVENTS, json=make_event(correlation_id=self.correlation_id)
                    )
                except httpx.TransportError:
                    self.lost_answers += 1
                    continue
                self.statuses.append(response.status_code)
                if response.status_code in (201, 202):
                    self.acked.add(response.json()["event_id"])

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_outage_is_absorbed_by_the_dlq_and_replayed_exactly_once(database, dlq_url, tmp_path):
    pg, url = database
    server = _server(url, dlq_url, tmp_path)
    correlation = f"outage-{uuid.uuid4()}"
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            first = api.post(EVENTS, json=make_event(correlation_id=correlation))
            assert first.status_code == 201
            ids = {first.json()["event_id"]}
            pg.stop()
            child = api.post(
                EVENTS,
                json=make_event(
                    correlation_id=correlation, parent_event_id=first.json()["event_id"]
                ),
            )
            assert child.status_code == 202
            ids.add(child.json()["event_id"])
            for _ in range(299):
                response = api.post(EVENTS, json=make_event(correlation_id=correlation))
                assert response.status_code == 202, response.text
                body = response.json()
                assert body["status"] == "accepted" and uuid.UUID(body["event_id"])
                ids.add(body["event_id"])
            for _ in range(3):
                batch = [make_event(correlation_id=correlation) for _ in range(100)]
                response = api.post(BATCH, json=batch)
                assert response.status_code == 202, response.text
                ids |= set(response.json()["event_ids"])
            notification = {
                "remediation_id": correlation,
                "notification_id": f"n-{uuid.uuid4()}",
                "recipient": "ops",
                "channel": "slack",
                "message_summary": "queued",
                "status": "sent",
                "sent_at": make_event()["event_timestamp"],
            }
            queued = api.post(NOTIFICATIONS, json=notification)
            assert queued.status_code == 202 and queued.json()["notification_id"]
            assert len(ids) == 601
            ready = api.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            health = api.get("/health")
            assert health.status_code == 503
            assert health.json()["checks"]["database"]["status"] == "down"
            assert health.json()["checks"]["dlq"]["status"] == "up"
            assert "Retry-After" in health.headers
            assert api.get(EVENTS, params={"correlation_id": correlation}).status_code == 503
            dlq = api.get("/api/v1/admin/dlq").json()
            depth = {s["stream"]: s["depth"] for s in dlq["streams"]}
            assert depth["audit_events"] == 600 and depth["notifications"] == 1
            pg.start()
            eventually(lambda: all_stored_once(url, correlation, ids), timeout=30, interval=0.5)
            with psycopg.connect(url) as conn:
                parent_date = conn.execute(
                    "SELECT parent_event_date FROM audit_events WHERE event_id = %s",
                    (child.json()["event_id"],),
                ).fetchone()[0]
                assert parent_date is not None  # looked up when the queued child was replayed
                assert (
                    conn.execute(
                        "SELECT count(*) FROM notification_audit WHERE notification_id = %s",
                        (notification["notification_id"],),
                    ).fetchone()[0]
                    == 1
                )
            eventually(lambda: api.get("/health/ready").json()["status"] == "ready", timeout=10)
            metrics = api.get("/metrics").text
            assert (
                'datastorage_audit_traces_total{service="gateway",status="dlq_fallback"} 600.0'
                in metrics
            )
            assert 'datastorage_dlq_replayed_total{stream="audit_events"} 600.0' in metrics
    finally:
        server.stop()


def test_database_and_redis_both_down_answers_503(database, tmp_path):
    pg, url = database
    own_redis = RedisServer()
    server = _server(url, own_redis.url, tmp_path)
    correlation = f"both-{uuid.uuid4()}"
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            pg.stop()
            own_redis.kill()
            acked = []
            for _ in range(20):
                response = api.post(EVENTS, json=make_event(correlation_id=correlation))
                assert response.status_code == 503, response.text
                assert int(response.headers["Retry-After"]) > 0
                assert response.json()["type"].endswith("/service-unavailable")
            batch = api.post(BATCH, json=[make_event(correlation_id=correlation)])
            assert batch.status_code == 503 and "Retry-After" in batch.headers
            ready = api.get("/health/ready")
            assert ready.status_code == 503 and "Retry-After" in ready.headers
            own_redis.start()
            eventually(lambda: api.get("/health/ready").json()["status"] == "degraded", timeout=15)
            response = api.post(EVENTS, json=make_event(correlation_id=correlation))
            assert response.status_code == 202
            acked.append(response.json()["event_id"])
            pg.start()
            eventually(lambda: all_stored_once(url, correlation, set(acked)), timeout=30)
    finally:
        server.stop()
        own_redis.destroy()


def test_dlq_at_capacity_answers_503_and_never_evicts(database, dlq_url, tmp_path):
    pg, url = database
    server = _server(url, dlq_url, tmp_path, DATASTORAGE_DLQ_CAPACITY="100")
    correlation = f"cap-{uuid.uuid4()}"
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            pg.stop()
            ids = set()
            for _ in range(100):
                response = api.post(EVENTS, json=make_event(correlation_id=correlation))
                assert response.status_code == 202
                ids.add(response.json()["event_id"])
            over = api.post(EVENTS, json=make_event(correlation_id=correlation))
            assert over.status_code == 503 and "Retry-After" in over.headers
            over_batch = api.post(BATCH, json=[make_event(correlation_id=correlation)])
            assert over_batch.status_code == 503
            depth = {
                s["stream"]: s["depth"] for s in api.get("/api/v1/admin/dlq").json()["streams"]
            }
            assert depth["audit_events"] == 100
            pg.start()
            eventually(lambda: all_stored_once(url, correlation, ids), timeout=30)
    finally:
        server.stop()


def test_poison_entry_is_dead_lettered_and_does_not_block_others(database, dlq_url, tmp_path):
    pg, url = database
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE audit_events ADD CONSTRAINT no_poison CHECK (severity <> 'poison')"
        )
    server = _server(url, dlq_url, tmp_path)
    correlation = f"poison-{uuid.uuid4()}"
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            pg.stop()
            good = set()
            for index in range(10):
                event = make_event(
                    correlation_id=correlation, severity="poison" if index == 3 else "info"
                )
                response = api.post(EVENTS, json=event)
                assert response.status_code == 202
                if index != 3:
                    good.add(response.json()["event_id"])
            pg.start()
            eventually(lambda: all_stored_once(url, correlation, good), timeout=30)

            def dead_lettered():
                streams = api.get("/api/v1/admin/dlq").json()["streams"]
                stats = {s["stream"]: s for s in streams}
                assert stats["audit_events"]["dead_lettered"] == 1
                assert stats["audit_events"]["depth"] == 0

            eventually(dead_lettered, timeout=30)
            env = {**server.env}
            status = subprocess.run(
                [sys.executable, "-m", "datastorage", "dlq", "status"],
                env=env,
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            assert status.returncode == 0, status.stderr
            line = next(x for x in status.stdout.splitlines() if x.startswith("audit_events"))
            assert line.split()[1:2] == ["0"] and line.split()[-1] == "1", status.stdout
            assert (
                'datastorage_dlq_dead_lettered_total{stream="audit_events"} 1.0'
                in api.get("/metrics").text
            )
    finally:
        server.stop()


def test_sigterm_while_writing_loses_no_acknowledged_event(database, dlq_url, tmp_path):
    _sigterm_while_writing(database, dlq_url, tmp_path, "hypercorn")


def test_sigterm_while_writing_on_uvicorn(database, tmp_path):
    _sigterm_while_writing(database, f"file://{tmp_path / 'spool'}", tmp_path, "uvicorn")


def _sigterm_while_writing(database, dlq_url, tmp_path, server_kind: str) -> None:
    pg, url = database
    server = _server(
        url,
        dlq_url,
        tmp_path,
        DATASTORAGE_SHUTDOWN_DELAY="1",
        DATASTORAGE_SHUTDOWN_TIMEOUT="10",
        DATASTORAGE_SERVER=server_kind,
    )
    correlation = f"sigterm-{uuid.uuid4()}"
    with Writers(server.url, correlation, threads=4) as writers:
        eventually(lambda: len(writers.acked) >= 50, timeout=30)
        server.signal(signal.SIGTERM)
        eventually(
            lambda: httpx.get(server.url + "/health/ready").status_code == 503,
            timeout=5,
            interval=0.02,
        )
        assert server.wait(60) == 0, server.log()
    assert set(writers.statuses) <= {201, 202}, server.log()
    server.start()
    try:
        eventually(lambda: _acked_stored_once(url, correlation, writers), timeout=30)
    finally:
        server.stop()


def _acked_stored_once(url: str, correlation: str, writers: Writers) -> None:
    """Every acknowledged event stored exactly once. A stored event nobody acknowledged is
    allowed only for a request whose connection broke before its answer arrived (the client
    cannot tell whether it was stored, and retries with a new event)."""
    counts = stored_event_counts(url, correlation)
    assert writers.acked <= set(counts), f"{len(writers.acked - set(counts))} acked, not stored"
    assert set(counts.values()) == {1}
    assert len(set(counts) - writers.acked) <= writers.lost_answers


def test_kill_9_with_queued_entries_drains_after_restart(database, dlq_url, tmp_path):
    pg, url = database
    server = _server(url, dlq_url, tmp_path, DATASTORAGE_DLQ_CLAIM_IDLE="2")
    correlation = f"kill9-{uuid.uuid4()}"
    with httpx.Client(base_url=server.url, timeout=30) as api:
        pg.stop()
        ids = {
            api.post(EVENTS, json=make_event(correlation_id=correlation)).json()["event_id"]
            for _ in range(50)
        }
    server.signal(signal.SIGKILL)
    server.wait(10)
    pg.start()
    server.start()
    try:
        eventually(lambda: all_stored_once(url, correlation, ids), timeout=30)
    finally:
        server.stop()


def test_two_servers_draining_one_redis_dlq_insert_no_duplicates(database, redis_server, tmp_path):
    pg, url = database
    dlq = redis_server.url.rsplit("/", 1)[0] + "/4"
    redis.Redis.from_url(dlq).flushdb()
    servers = [_server(url, dlq, tmp_path, DATASTORAGE_DLQ_BATCH_SIZE="50") for _ in range(2)]
    correlation = f"two-{uuid.uuid4()}"
    ids: set[str] = set()
    try:
        pg.stop()
        for index in range(10):
            target = servers[index % 2]
            batch = [make_event(correlation_id=correlation) for _ in range(50)]
            response = httpx.post(target.url + BATCH, json=batch, timeout=30)
            assert response.status_code == 202
            ids |= set(response.json()["event_ids"])
        pg.start()
        eventually(lambda: all_stored_once(url, correlation, ids), timeout=30)
        replayed = 0.0
        for server in servers:
            for line in httpx.get(server.url + "/metrics").text.splitlines():
                if line.startswith('datastorage_dlq_replayed_total{stream="audit_events"}'):
                    replayed += float(line.split()[-1])
        assert replayed >= 500
    finally:
        for server in servers:
            server.stop()


def test_kill_9_under_load_loses_no_201_acknowledged_event(database, tmp_path):
    """Group commit answers 201 only after the commit: killing the server mid-load (no DLQ,
    so every acknowledgement is a 201) leaves every acknowledged id in the table."""
    pg, url = database
    server = ServerProcess({"DATASTORAGE_DATABASE_URL": url}, tmp_path)
    correlation = f"gc-kill-{uuid.uuid4()}"
    with Writers(server.url, correlation, threads=16) as writers:
        eventually(lambda: len(writers.acked) >= 300, timeout=60)
        server.signal(signal.SIGKILL)
        server.wait(10)
    assert set(writers.statuses) == {201}
    counts = stored_event_counts(url, correlation)
    missing = writers.acked - set(counts)
    assert not missing, f"{len(missing)} acknowledged events missing"
    assert set(counts.values()) == {1}


def test_invalid_batch_during_an_outage_is_400_and_queues_nothing(database, tmp_path):
    """A batch is copied while it is still being normalized; with the database down it is
    queued only once every item is known valid."""
    pg, url = database
    server = _server(url, f"file://{tmp_path}/dlq", tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            pg.stop()
            batch = [make_event() for _ in range(200)]
            batch[199]["event_timestamp"] = "2000-01-01T00:00:00Z"  # older than 7 days
            response = api.post(BATCH, json=batch)
            assert response.status_code == 400, response.text
            assert set(response.json()["field_errors"]) == {"[199].event_timestamp"}
            dlq = api.get("/api/v1/admin/dlq").json()
            assert all(stream["depth"] == 0 for stream in dlq["streams"]), dlq
            batch[199] = make_event()
            assert api.post(BATCH, json=batch).status_code == 202
            dlq = api.get("/api/v1/admin/dlq").json()
            assert {s["stream"]: s["depth"] for s in dlq["streams"]}["audit_events"] == 200
    finally:
        server.stop()
        pg.start()
