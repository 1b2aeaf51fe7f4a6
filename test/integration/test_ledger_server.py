"""The tamper-evident log in the running server (docs/tamper-evident-log.md, issue 12 acceptance 3
and 5): real server processes with a signing key, a real PostgreSQL that is stopped mid-run, a
shared Redis
DLQ, and the process that sequences killed with SIGKILL mid-run. Afterwards every stored event is
exactly one leaf, no leaf lacks its row, every signed checkpoint verifies, consecutive
checkpoints are consistent, and the published copies equal the signed ones."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import httpx
import psycopg
import pytest
import redis
from ledger_helpers import check_tree
from support import ServerProcess, eventually, make_event

from datastorage.ledger import checkpoint, merkle, note, proofs
from datastorage.ledger.keyfile import keygen

EVENTS = "/api/v1/audit/events"
BATCH = "/api/v1/audit/events/batch"
ORIGIN = "audit.example.com/server-test"


@pytest.fixture()
def verifier(tmp_path) -> tuple[str, note.Verifier]:
    path = tmp_path / "log.key"
    return str(path), note.parse_verifier_key(keygen(ORIGIN, path))


def _log_server(url: str, key_file: str, tmp_path: Path, **extra: str) -> ServerProcess:
    env = {
        "DATASTORAGE_DATABASE_URL": url,
        "DATASTORAGE_DB_POOL_TIMEOUT": "2",
        "DATASTORAGE_LOG_SIGNING_KEY_FILE": key_file,
        "DATASTORAGE_LOG_CHECKPOINT_INTERVAL": "0.3",
        "DATASTORAGE_LOG_SEQUENCE_INTERVAL": "0.1",
        **extra,
    }
    return ServerProcess(env, tmp_path)


def _leader_pid(url: str) -> int | None:
    """The pid of the server process holding the log's election lock (its lock connection is
    named after it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND a.application_name LIKE 'datastorage-log-election-%'"
        ).fetchone()
    return None if row is None else int(row[0].rsplit("-", 1)[1])


def _elected(url: str) -> int:
    """Wait until some process holds the election lock; its pid."""

    def held() -> int:
        pid = _leader_pid(url)
        assert pid is not None, "no process holds the log's election lock"
        return pid

    return eventually(held, timeout=30)


def _gauge(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exposed")


def _metric(server: ServerProcess, name: str) -> float:
    return _gauge(httpx.get(server.url + "/metrics", timeout=10).text, name)


class Load:
    """16 single writers and 2 batch writers spread over the live servers, recording the ids
    acknowledged (201/202) until stopped."""

    def __init__(self, servers: list[ServerProcess], correlation: str) -> None:
        self.servers = servers
        self.correlation = correlation
        self.acked: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=18)

    def _post(self, turn: int, path: str, body: object) -> httpx.Response | None:
        live = [s for s in self.servers if s.proc is not None and s.proc.poll() is None]
        try:
            return httpx.post(live[turn % len(live)].url + path, json=body, timeout=30)
        except httpx.TransportError:
            return None

    def _record(self, response: httpx.Response | None, key: str) -> None:
        if response is not None and response.status_code in (201, 202):
            body = response.json()
            with self._lock:
                self.acked.update(body[key] if key == "event_ids" else [body[key]])

    def _single(self, index: int) -> None:
        turn = index
        while not self._stop.is_set():
            turn += 1
            body = make_event(correlation_id=self.correlation)
            self._record(self._post(turn, EVENTS, body), "event_id")

    def _batch(self, index: int) -> None:
        turn = index
        while not self._stop.is_set():
            turn += 1
            body = [make_event(correlation_id=self.correlation) for _ in range(50)]
            self._record(self._post(turn, BATCH, body), "event_ids")

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def __enter__(self) -> Load:
        self._writers = [self._pool.submit(self._single, i) for i in range(16)]
        self._writers += [self._pool.submit(self._batch, i) for i in range(2)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)
        for writer in self._writers:
            writer.result()  # a writer that raised fails the test


def _settled(url: str) -> tuple[int, int]:
    """Nothing pending, every row a leaf, and a checkpoint of the whole tree signed."""
    with psycopg.connect(url, autocommit=True) as conn:
        pending, rows, size, signed = conn.execute(
            "SELECT (SELECT count(*) FROM log_pending), (SELECT count(*) FROM audit_events),"
            " (SELECT tree_size FROM log_tree), (SELECT max(tree_size) FROM log_checkpoints)"
        ).fetchone()
    assert (pending, size, signed) == (0, rows, rows), (pending, rows, size, signed)
    return rows, size


async def _check_log(url: str, verifier: note.Verifier, published: Path | None) -> int:
    """The whole log, checked from the database (and the publish directory): returns the
    number of checkpoints."""
    await check_tree(url)  # leaf indexes dense, each leaf hash recomputed from its row
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM audit_events e WHERE NOT EXISTS "
            "  (SELECT 1 FROM log_leaves l WHERE l.event_id = e.event_id)),"
            " (SELECT count(*) FROM log_leaves l WHERE NOT EXISTS "
            "  (SELECT 1 FROM audit_events e WHERE e.event_id = l.event_id)),"
            " (SELECT count(*) - count(DISTINCT event_id) FROM log_leaves)"
        )
        assert await cur.fetchone() == (0, 0, 0)  # no row without a leaf, no leaf without a row
        cur = await conn.execute("SELECT tree_size, note FROM log_checkpoints ORDER BY tree_size")
        signed = await cur.fetchall()
        assert signed
        previous: checkpoint.Checkpoint | None = None
        for size, text in signed:
            point = checkpoint.parse(note.verify(text.encode(), verifier))
            assert (point.origin, point.size) == (ORIGIN, size)
            assert point.root == await proofs.root(conn, size)
            if previous is not None:
                proof = await proofs.consistency(conn, previous.size, point.size)
                merkle.verify_consistency(
                    previous.size, point.size, previous.root, point.root, proof
                )
            previous = point
            if published is not None:
                assert (published / "checkpoints" / str(size)).read_text() == text
        if published is not None:
            assert (published / "checkpoint").read_text() == signed[-1][1]
    return len(signed)


def test_outage_replay_and_a_killed_sequencer_leave_one_leaf_per_event(
    database, redis_server, verifier, tmp_path
):
    pg, url = database
    key_file, verifier_key = verifier
    dlq = redis_server.url.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(dlq).flushdb()
    published = tmp_path / "published"
    servers = [
        _log_server(
            url,
            key_file,
            tmp_path,
            DATASTORAGE_DLQ_URL=dlq,
            DATASTORAGE_DLQ_CLAIM_IDLE="2",
            DATASTORAGE_LOG_PUBLISH_URL=f"file://{published}",
        )
        for _ in range(2)
    ]
    try:
        assert _elected(url) in {s.proc.pid for s in servers}
        with Load(servers, f"log-{uuid.uuid4()}") as load:
            eventually(lambda: load.count() >= 500, timeout=60)
            pg.stop()  # writes now answer 202 from the DLQ
            before = load.count()
            eventually(lambda: load.count() >= before + 200, timeout=60)
            pg.start()
            _elected(url)
            before = load.count()
            eventually(lambda: load.count() >= before + 500, timeout=60)
            # Kill the process that sequences while it has work: the other takes over.
            leader = _elected(url)
            killed = next(s for s in servers if s.proc.pid == leader)
            killed.signal(signal.SIGKILL)
            killed.wait(10)
            survivor = next(s for s in servers if s is not killed)
            assert _elected(url) == survivor.proc.pid
            before = load.count()
            eventually(lambda: load.count() >= before + 500, timeout=60)
        acked = load.acked
        eventually(lambda: _settled(url), timeout=120, interval=0.5)
        with psycopg.connect(url, autocommit=True) as conn:
            stored = {
                row[0] for row in conn.execute("SELECT event_id::text FROM audit_events").fetchall()
            }
        assert acked <= stored, f"{len(acked - stored)} acknowledged events not stored"
        eventually(lambda: (published / "checkpoint").read_text(), timeout=30)
        eventually(lambda: asyncio.run(_check_log(url, verifier_key, published)) > 2, timeout=30)
        # The gauge is sampled on the leader's schedule: it reaches the settled size soon after.
        eventually(lambda: _metric(survivor, "datastorage_log_tree_size") == len(stored), 30)
        assert _metric(survivor, "datastorage_log_consistency_failures_total") == 0
    finally:
        for server in servers:
            server.stop()


def test_a_tree_that_does_not_extend_the_signed_one_stops_signing_and_is_counted(
    database, verifier, tmp_path
):
    _, url = database
    key_file, verifier_key = verifier
    server = _log_server(url, key_file, tmp_path)
    try:
        for _ in range(3):
            assert httpx.post(server.url + EVENTS, json=make_event()).status_code == 201
        eventually(lambda: _settled(url), timeout=30)
        with psycopg.connect(url, autocommit=True) as conn:
            # The signer's memory of what it signed no longer matches the tree.
            conn.execute("UPDATE log_signer_state SET root_hash = sha256('forged'::bytea)")
        assert httpx.post(server.url + EVENTS, json=make_event()).status_code == 201
        eventually(
            lambda: _metric(server, "datastorage_log_consistency_failures_total") == 1, timeout=30
        )
        with psycopg.connect(url, autocommit=True) as conn:
            (signed,) = conn.execute("SELECT max(tree_size) FROM log_checkpoints").fetchone()
        assert signed == 3  # the fourth event is a leaf but was never signed
        assert httpx.post(server.url + EVENTS, json=make_event()).status_code == 201
        eventually(lambda: _metric(server, "datastorage_log_tree_size") == 5, timeout=30)
        assert _metric(server, "datastorage_log_consistency_failures_total") == 1
        assert "refusing to sign" in server.log()
    finally:
        server.stop()


def test_checkpoints_reach_s3_and_a_failing_target_never_holds_up_writes(
    database, verifier, tmp_path, s3_endpoint, s3_env
):
    _, url = database
    key_file, verifier_key = verifier
    bucket = f"log-{uuid.uuid4().hex[:12]}"  # not created yet: every upload fails
    server = _log_server(
        url,
        key_file,
        tmp_path,
        DATASTORAGE_LOG_PUBLISH_URL=f"s3://{bucket}/audit",
        DATASTORAGE_S3_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID=os.environ["AWS_ACCESS_KEY_ID"],
        AWS_SECRET_ACCESS_KEY=os.environ["AWS_SECRET_ACCESS_KEY"],
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        for _ in range(3):
            batch = [make_event() for _ in range(20)]
            assert httpx.post(server.url + BATCH, json=batch, timeout=30).status_code == 201
            eventually(lambda: _settled(url), timeout=30)
        eventually(lambda: _metric(server, "datastorage_log_publish_failures_total") >= 2, 30)
        # Writes are answered while publication fails: it runs apart from the write path.
        assert httpx.post(server.url + EVENTS, json=make_event()).status_code == 201
        s3 = boto3.client("s3", endpoint_url=s3_endpoint)
        s3.create_bucket(Bucket=bucket)
        rows, _ = eventually(lambda: _settled(url), timeout=30)

        def caught_up() -> None:
            listed = s3.list_objects_v2(Bucket=bucket, Prefix="audit/")
            names = {item["Key"] for item in listed.get("Contents", [])}
            with psycopg.connect(url, autocommit=True) as conn:
                sizes = [r[0] for r in conn.execute("SELECT tree_size FROM log_checkpoints")]
            assert names == {"audit/checkpoint"} | {f"audit/checkpoints/{s}" for s in sizes}
            latest = s3.get_object(Bucket=bucket, Key="audit/checkpoint")["Body"].read()
            assert checkpoint.parse(note.verify(latest, verifier_key)).size == rows

        eventually(caught_up, timeout=30)
    finally:
        server.stop()


def test_sigterm_stops_the_log_workers_and_releases_the_lock(database, verifier, tmp_path):
    _, url = database
    key_file, _ = verifier
    server = _log_server(url, key_file, tmp_path)
    try:
        assert _elected(url) == server.proc.pid
        assert httpx.post(server.url + EVENTS, json=make_event()).status_code == 201
        eventually(lambda: _settled(url), timeout=30)
        server.signal(signal.SIGTERM)
        assert server.wait(60) == 0
        assert _leader_pid(url) is None
    finally:
        server.stop()


def test_a_signing_key_that_cannot_be_read_stops_the_start(database, tmp_path):
    _, url = database
    bad = tmp_path / "not-a.key"
    bad.write_text("PRIVATE+KEY+not+a+key\n")
    for key_file in (str(tmp_path / "missing.key"), str(bad)):
        with pytest.raises(RuntimeError, match="server exited") as failure:
            _log_server(url, key_file, tmp_path)
        assert "configuration error: DATASTORAGE_LOG_SIGNING_KEY_FILE" in str(failure.value)
        assert key_file in str(failure.value) and "Traceback" not in str(failure.value)


def test_one_of_several_workers_leads_and_every_worker_reports_the_gauges(
    database, verifier, tmp_path
):
    """With the log's work on a thread of each worker (`DATASTORAGE_LOG_PROCESS=false`)."""
    _, url = database
    key_file, _ = verifier
    server = _log_server(
        url, key_file, tmp_path, DATASTORAGE_WORKERS="2", DATASTORAGE_LOG_PROCESS="false"
    )
    try:

        def two_candidates_one_leader() -> int:
            with psycopg.connect(url, autocommit=True) as conn:
                names = [
                    row[0]
                    for row in conn.execute(
                        "SELECT application_name FROM pg_stat_activity "
                        "WHERE application_name LIKE 'datastorage-log-election-%'"
                    )
                ]
            assert len(names) == 2, names
            return _elected(url)

        leader = eventually(two_candidates_one_leader, timeout=60)
        assert leader != server.proc.pid  # a worker process, not the supervisor
        batch = [make_event() for _ in range(30)]
        assert httpx.post(server.url + BATCH, json=batch, timeout=30).status_code == 201
        eventually(lambda: _settled(url), timeout=30)

        # Whichever worker answers the scrape, the merged gauges are the latest samples. The
        # leader samples on its own schedule: a sample may fall between the sequencing of the
        # batch and the signing of its checkpoint, so each scrape waits for one taken after both.
        def sampled_after_the_checkpoint() -> None:
            gauges = httpx.get(server.url + "/metrics", timeout=10).text
            assert _gauge(gauges, "datastorage_log_tree_size") == 30
            assert _gauge(gauges, "datastorage_log_sequencing_lag_seconds") == 0
            assert _gauge(gauges, "datastorage_log_checkpoint_age_seconds") >= 0  # NaN: none

        for _ in range(4):
            eventually(sampled_after_the_checkpoint, timeout=30)
    finally:
        server.stop()


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_with_several_workers_the_log_runs_in_its_own_respawned_process(
    database, verifier, tmp_path
):
    """The default with several workers: the supervisor starts one process for the log's work
    next to the API workers; only it takes part in the election, the workers serve the log's
    endpoints and report its gauges, and after kill -9 it is started again and carries on."""
    _, url = database
    key_file, _ = verifier
    server = _log_server(url, key_file, tmp_path, DATASTORAGE_WORKERS="2")
    try:

        def one_candidate() -> int:
            with psycopg.connect(url, autocommit=True) as conn:
                (candidates,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'datastorage-log-election-%'"
                ).fetchone()
            assert candidates == 1
            return _elected(url)

        first = eventually(one_candidate, timeout=60)
        assert "--log-process" in _cmdline(first)
        batch = [make_event() for _ in range(30)]
        assert httpx.post(server.url + BATCH, json=batch, timeout=30).status_code == 201
        eventually(lambda: _settled(url), timeout=30)
        eventually(lambda: _metric(server, "datastorage_log_tree_size") == 30, timeout=30)

        os.kill(first, signal.SIGKILL)

        def respawned_leader() -> int:
            pid = _leader_pid(url)
            assert pid not in (None, first), pid
            return pid

        second = eventually(respawned_leader, timeout=60)
        assert "--log-process" in _cmdline(second)
        more = [make_event() for _ in range(20)]
        assert httpx.post(server.url + BATCH, json=more, timeout=30).status_code == 201
        eventually(lambda: _settled(url), timeout=30)
        assert asyncio.run(check_tree(url))[0] == 50
        with psycopg.connect(url, autocommit=True) as conn:
            (event_id,) = conn.execute(
                "SELECT event_id::text FROM log_leaves ORDER BY leaf_index DESC LIMIT 1"
            ).fetchone()
        # The API workers serve the log's endpoints (proofs against the signed checkpoint).
        proof = httpx.get(f"{server.url}/api/v1/audit/log/proof/{event_id}", timeout=10)
        assert proof.status_code == 200, proof.text
        assert proof.json()["tree_size"] == 50
    finally:
        server.stop()
