"""The bearer token appears in no log line, metric or problem body (docs/auth.md), whatever happens:
success, denial, rejection, rate limit, API server outage. Logging runs at DEBUG with the
service's JSON format in the real application (its access log, the httpx client of the
reviews), and the stand-in echoes the token in its TokenReview answers like the real API server
does. The DLQ record is checked where writes are really queued (test_auth_recorded_by)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from auth_support import ManualClock, auth_settings, bearer, serving
from kube_api_standin import Grant, KubeApiStandin, User
from prometheus_client import REGISTRY, generate_latest
from support import make_event

from datastorage.cli import setup_logging

WRITER_TOKEN = "eyJhbGciOi.writer-secret-0b7e5d4c.sig"
DENIED_TOKEN = "eyJhbGciOi.denied-secret-93af12e0.sig"
OUTAGE_TOKEN = "eyJhbGciOi.outage-secret-7c11d2aa.sig"
UNKNOWN_TOKEN = "eyJhbGciOi.unknown-secret-5e2f8b19.sig"
SECRETS = (WRITER_TOKEN, DENIED_TOKEN, OUTAGE_TOKEN, UNKNOWN_TOKEN)
EVENTS = "/api/v1/audit/events"


@pytest.fixture()
def restore_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


def test_the_token_is_in_no_log_line_metric_or_problem(
    tmp_path, capsys, restore_logging, database_url
):
    standin = KubeApiStandin().start()
    kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig")
    for token, name in ((WRITER_TOKEN, "writer"), (DENIED_TOKEN, "denied"), (OUTAGE_TOKEN, "late")):
        standin.add_token(token, User(name))
    standin.grant("user:writer", Grant(("create",), ("auditevents",)))
    settings = auth_settings(
        database_url,
        kubeconfig,
        DATASTORAGE_LOG_LEVEL="DEBUG",
        DATASTORAGE_LOG_FORMAT="json",
        DATASTORAGE_RATE_LIMIT_EVENTS="1",
        DATASTORAGE_RATE_LIMIT_BURST="1",
    )
    setup_logging(settings)
    clock = ManualClock()

    async def main():
        responses = []
        async with serving(settings, clock) as client:

            async def post(token):
                response = await client.post(EVENTS, json=make_event(), headers=bearer(token))
                responses.append(response)
                return response.status_code

            statuses = [
                await post(WRITER_TOKEN),  # allowed
                await post(WRITER_TOKEN),  # over the budget
                await post(DENIED_TOKEN),  # forbidden
                await post(UNKNOWN_TOKEN),  # unauthenticated
            ]
            standin.stop()
            statuses.append(await post(OUTAGE_TOKEN))  # the API server is gone
        return statuses, responses

    try:
        statuses, responses = asyncio.run(main())
    finally:
        standin.stop()
    assert statuses == [201, 429, 403, 401, 503]

    logged = capsys.readouterr().err
    assert '"level": "debug"' in logged and "403 on POST" in logged  # the logs did run
    scraped = generate_latest(REGISTRY).decode()
    assert "datastorage_auth_requests_total" in scraped
    answered = "\n".join(f"{r.headers}\n{r.text}" for r in responses)
    for secret in SECRETS:
        assert secret not in logged
        assert secret not in scraped
        assert secret not in answered
