"""Who wrote it: `recorded_by` is the reviewed username on every stored event and notification,
set by the server, returned by GET, filterable, and carried through the DLQ so a replayed write
keeps it (docs/auth.md, acceptance 4 and 6 of the auth issue).

The in-process tests run the real application on this worker's database; the outage test runs
`datastorage serve` as a process whose PostgreSQL is really stopped during the writes, with
both DLQ backends, and reads the queued records as they lie in the backend.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

import httpx
import pytest
import redis
from auth_support import auth_settings, bearer, serving
from kube_api_standin import Grant, KubeApiStandin, User
from support import ServerProcess, eventually, make_event, make_notification
from workflow_helpers import WORKFLOWS, search_body, unique, workflow_body

from datastorage.config import load_settings
from datastorage.dlq.queue import KINDS
from datastorage.dlq.redis_streams import stream_key
from datastorage.dlq.spool import FILENAME

EVENTS = "/api/v1/audit/events"
BATCH = "/api/v1/audit/events/batch"
NOTIFICATIONS = "/api/v1/audit/notifications"
WRITER = "system:serviceaccount:team-a:gateway"
OTHER = "system:serviceaccount:team-a:notifier"
WRITER_TOKEN = "eyJhbGciOi.writer-secret-41c9e0d2.sig"
OTHER_TOKEN = "eyJhbGciOi.other-secret-08b7aa13.sig"


@pytest.fixture()
def standin(tmp_path):
    api = KubeApiStandin().start()
    api.kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    api.add_token(WRITER_TOKEN, User(WRITER, groups=("system:serviceaccounts:team-a",)))
    api.add_token(OTHER_TOKEN, User(OTHER, groups=("system:serviceaccounts:team-a",)))
    api.grant(
        "group:system:serviceaccounts:team-a",
        Grant(("*",), ("*",)),
        Grant(("get",), non_resource_urls=("/metrics",)),
    )
    yield api
    api.stop()


def test_every_write_records_the_reviewed_username_and_reads_filter_by_it(standin, database_url):
    correlation = f"who-{uuid.uuid4()}"
    remediation = f"rem-{uuid.uuid4()}"
    workflow = unique("WhoWrote")

    async def scenario(client):
        def post(path, body, token=WRITER_TOKEN):
            return client.post(path, json=body, headers=bearer(token))

        def get(path, token=WRITER_TOKEN, **params):
            return client.get(path, params=params, headers=bearer(token))

        # A body field of that name is ignored like any field the schema does not name.
        single = await post(EVENTS, make_event(correlation_id=correlation, recorded_by="mallory"))
        streamed = await post(BATCH, [make_event(correlation_id=correlation) for _ in range(3)])
        with_ids = [make_event(correlation_id=correlation, event_id=str(uuid.uuid4()))]
        looked_up = await post(BATCH, with_ids, OTHER_TOKEN)  # the batch path with look-ups
        note = await post(
            NOTIFICATIONS, make_notification(remediation_id=remediation, recorded_by="mallory")
        )
        await post(NOTIFICATIONS, make_notification(remediation_id=remediation), OTHER_TOKEN)
        created = await post(WORKFLOWS, workflow_body(workflow))
        await post(f"{WORKFLOWS}/search", search_body("OOMKilled", remediation_id=correlation))
        assert [r.status_code for r in (single, streamed, looked_up, note, created)] == [201] * 5

        async def searched():
            page = (await get(EVENTS, correlation_id=correlation, recorded_by=WRITER)).json()
            return [e for e in page["data"] if e["event_type"].endswith("search_completed")]

        deadline = asyncio.get_running_loop().time() + 30
        search_events = await searched()
        while not search_events and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)  # the search event is written after the response
            search_events = await searched()
        one = (await get(f"{EVENTS}/{single.json()['event_id']}")).json()
        mine = (await get(EVENTS, correlation_id=correlation, recorded_by=WRITER)).json()
        theirs = (await get(EVENTS, correlation_id=correlation, recorded_by=OTHER)).json()
        change = (await get(EVENTS, correlation_id=workflow)).json()
        notes = (await get(NOTIFICATIONS, remediation_id=remediation, recorded_by=OTHER)).json()
        return one, note.json(), mine, theirs, change, notes, search_events

    one, note, mine, theirs, change, notes, search_events = asyncio.run(
        _run(standin, database_url, scenario)
    )
    assert one["recorded_by"] == WRITER
    assert note["recorded_by"] == WRITER
    assert {e["recorded_by"] for e in mine["data"]} == {WRITER}
    assert mine["pagination"]["total"] == 1 + 3 + 1  # single, streamed batch, search event
    assert [e["recorded_by"] for e in theirs["data"]] == [OTHER]
    (self_audit,) = change["data"]
    assert self_audit["event_type"] == "datastorage.workflow.created"
    assert self_audit["recorded_by"] == WRITER
    assert [n["recorded_by"] for n in notes["data"]] == [OTHER]
    assert [e["recorded_by"] for e in search_events] == [WRITER]


async def _run(standin, database_url, scenario):
    async with serving(auth_settings(database_url, standin.kubeconfig)) as client:
        return await scenario(client)


def test_without_authentication_recorded_by_is_null(database_url):
    settings = load_settings({"DATASTORAGE_DATABASE_URL": database_url})

    async def scenario():
        async with serving(settings) as client:
            created = await client.post(EVENTS, json=make_event(recorded_by="mallory"))
            return (await client.get(f"{EVENTS}/{created.json()['event_id']}")).json()

    assert asyncio.run(scenario())["recorded_by"] is None


@pytest.fixture(params=["file", "redis"])
def dlq_url(request, tmp_path, redis_server):
    if request.param == "file":
        return f"file://{tmp_path / 'spool'}"
    url = redis_server.url.rsplit("/", 1)[0] + "/4"
    redis.Redis.from_url(url).flushdb()
    return url


def queued_records(dlq_url: str) -> list[bytes]:
    """The records waiting in the DLQ, as stored by the backend."""
    if dlq_url.startswith("file://"):
        path = dlq_url.removeprefix("file://") + "/" + FILENAME
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return [row[0] for row in conn.execute("SELECT record FROM payloads")]
    client = redis.Redis.from_url(dlq_url)
    return [
        value
        for kind in KINDS
        for _, fields in client.xrange(stream_key(kind))
        for value in fields.values()
    ]


def test_writes_queued_while_postgresql_is_down_keep_recorded_by_when_replayed(
    standin, database, dlq_url, tmp_path
):
    pg, url = database
    server = ServerProcess(
        {
            "DATASTORAGE_DATABASE_URL": url,
            "DATASTORAGE_DLQ_URL": dlq_url,
            "DATASTORAGE_DB_POOL_TIMEOUT": "2",
            "DATASTORAGE_AUTH": "kubernetes",
            "KUBECONFIG": str(standin.kubeconfig),
            "DATASTORAGE_LOG_LEVEL": "DEBUG",
        },
        tmp_path,
    )
    correlation = f"replay-{uuid.uuid4()}"
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            warm = api.post(
                EVENTS, json=make_event(correlation_id=correlation), headers=bearer(WRITER_TOKEN)
            )
            assert warm.status_code == 201
            pg.stop()
            single = api.post(
                EVENTS,
                json=make_event(correlation_id=correlation, recorded_by="mallory"),
                headers=bearer(WRITER_TOKEN),
            )
            batch = api.post(
                BATCH,
                json=[make_event(correlation_id=correlation) for _ in range(2)],
                headers=bearer(OTHER_TOKEN),
            )
            note = api.post(
                NOTIFICATIONS,
                json=make_notification(remediation_id=correlation),
                headers=bearer(OTHER_TOKEN),
            )
            assert [r.status_code for r in (single, batch, note)] == [202] * 3, single.text
            records = queued_records(dlq_url)
            assert len(records) == 4
            for record in records:
                assert WRITER_TOKEN.encode() not in record and OTHER_TOKEN.encode() not in record
            assert sum(WRITER.encode() in r for r in records) == 1
            assert sum(OTHER.encode() in r for r in records) == 3
            pg.start()

            def replayed():
                found = api.get(
                    EVENTS,
                    params={"correlation_id": correlation, "limit": 10},
                    headers=bearer(WRITER_TOKEN),
                )
                assert found.status_code == 200
                by_id = {e["event_id"]: e["recorded_by"] for e in found.json()["data"]}
                assert len(by_id) == 4
                return by_id

            by_id = eventually(replayed, timeout=30, interval=0.5)
            assert by_id[single.json()["event_id"]] == WRITER
            assert {by_id[i] for i in batch.json()["event_ids"]} == {OTHER}
            notes = api.get(
                NOTIFICATIONS,
                params={"remediation_id": correlation},
                headers=bearer(OTHER_TOKEN),
            ).json()["data"]
            assert [n["recorded_by"] for n in notes] == [OTHER]
            assert note.json()["notification_id"] == notes[0]["notification_id"]
    finally:
        server.stop()
    logged = server.log_path.read_text()
    assert "DEBUG" in logged  # the server did log at DEBUG
    assert WRITER_TOKEN not in logged and OTHER_TOKEN not in logged
