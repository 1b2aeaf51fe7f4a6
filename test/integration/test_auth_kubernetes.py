"""Authentication and authorization of the real application against a Kubernetes API stand-in
reached over real HTTP through a kubeconfig (docs/auth.md, acceptance 1, 2, 3 and 5 of the auth
issue).

The application is `create_app` as `datastorage serve` builds it, served in-process with its
lifespan, on this worker's PostgreSQL. Call counts on the stand-in show what the caches saved;
what was stored (and by whom) is read back with SQL.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from auth_support import ManualClock, auth_settings, bearer, jwt_with_exp, serving
from kube_api_standin import Grant, KubeApiStandin, User
from support import make_event, make_notification

from datastorage.auth.permissions import OPEN_PATHS, permission_for

AUDIENCE = "datastorage"
NAMESPACE = "team-a"
WRITER = "system:serviceaccount:team-a:gateway"
EVENTS = "/api/v1/audit/events"
BATCH = "/api/v1/audit/events/batch"
NOTIFICATIONS = "/api/v1/audit/notifications"


@pytest.fixture()
def standin(tmp_path):
    api = KubeApiStandin().start()
    api.kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
    # A workload: its permission is bound only to its namespace's service-account group.
    api.add_token(
        "writer-token",
        User(
            WRITER,
            uid="6a1c-writer",
            groups=("system:serviceaccounts", "system:serviceaccounts:team-a"),
            extra={"authentication.kubernetes.io/pod-name": ["gateway-0"]},
            audiences=(AUDIENCE,),
        ),
    )
    api.grant(
        "group:system:serviceaccounts:team-a",
        Grant(("create", "list"), ("auditevents", "notifications"), namespaces=(NAMESPACE,)),
    )
    api.add_token("nobody-token", User("nobody", audiences=(AUDIENCE,)))
    api.add_token("elsewhere-token", User("elsewhere", audiences=("https://other.example",)))
    yield api
    api.stop()


@pytest.fixture()
def correlation():
    """This test's correlation id: what it stored is told apart from other tests' rows."""
    return f"auth-{uuid.uuid4()}"


def run(standin, database_url, scenario, *, clock=None, tmp_path=None, **env):
    """Runs `scenario(client)` against the real app asking `standin`."""
    if tmp_path is not None:
        env.setdefault("DATASTORAGE_DLQ_URL", f"file://{tmp_path / 'spool'}")
    settings = auth_settings(
        database_url, standin.kubeconfig, DATASTORAGE_AUTH_AUDIENCES=AUDIENCE, **env
    )

    async def main():
        async with serving(settings, clock) as client:
            return await scenario(client)

    return asyncio.run(main())


def stored_by(db, correlation: str) -> dict[str | None, int]:
    """recorded_by -> rows of this test's events."""
    rows = db.execute(
        "SELECT recorded_by, count(*) FROM audit_events WHERE correlation_id = %s GROUP BY 1",
        (correlation,),
    ).fetchall()
    return dict(rows)


# Acceptance 1: who gets in.


def test_missing_unknown_and_wrong_audience_tokens_get_401_with_www_authenticate(
    standin, database_url, db, correlation
):
    event = make_event(correlation_id=correlation)

    async def scenario(client):
        return [
            await client.post(EVENTS, json=event),
            await client.post(EVENTS, json=event, headers=bearer("no-such")),
            await client.get(EVENTS, headers=bearer("elsewhere-token")),
            await client.get(EVENTS, headers={"Authorization": "Basic eDp5"}),
        ]

    for response in run(standin, database_url, scenario):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"].endswith("/unauthenticated")
        assert problem["title"] == "Authentication required"
        assert response.headers["X-Request-Id"]  # inside the request context
    assert stored_by(db, correlation) == {}
    assert standin.token_audiences == [[AUDIENCE], [AUDIENCE]]  # no token: no review at all


def test_a_token_for_other_audiences_is_refused_even_if_the_api_server_accepts_it(
    standin, database_url
):
    standin.honour_audiences = False

    async def scenario(client):
        return await client.get(EVENTS, headers=bearer("elsewhere-token"))

    assert run(standin, database_url, scenario).status_code == 401
    assert standin.token_reviews == 1


def post_one(standin, database_url, correlation: str, token: str):
    """One event posted with `token` to a fresh app; the response."""

    async def scenario(client):
        event = make_event(correlation_id=correlation)
        return await client.post(EVENTS, json=event, headers=bearer(token))

    return run(standin, database_url, scenario)


def test_a_user_without_rbac_gets_403_naming_verb_and_resource(
    standin, database_url, db, correlation
):
    response = post_one(standin, database_url, correlation, "nobody-token")
    assert response.status_code == 403
    problem = response.json()
    assert problem["type"].endswith("/forbidden") and problem["title"] == "Permission denied"
    assert (problem["verb"], problem["resource"]) == ("create", "auditevents")
    assert "create auditevents" in problem["detail"] and "nobody" in problem["detail"]
    assert stored_by(db, correlation) == {}


def test_permission_bound_only_to_a_group_of_the_caller_is_enough(
    standin, database_url, db, correlation
):
    response = post_one(standin, database_url, correlation, "writer-token")
    assert response.status_code == 201
    assert stored_by(db, correlation) == {WRITER: 1}
    (spec,) = standin.access_specs
    assert spec["user"] == WRITER and spec["uid"] == "6a1c-writer"
    assert spec["groups"] == ["system:serviceaccounts", "system:serviceaccounts:team-a"]
    assert spec["extra"] == {"authentication.kubernetes.io/pod-name": ["gateway-0"]}
    assert spec["resourceAttributes"] == {
        "group": "datastorage.kubernaut.ai",
        "namespace": NAMESPACE,
        "resource": "auditevents",
        "subresource": "",
        "verb": "create",
    }


def _concrete(template: str) -> str:
    """A request path for a template: a well-formed id in every parameter."""
    for name in ("{event_id}", "{workflow_id}", "{correlation_id}", "{workflow_name}"):
        template = template.replace(name, str(uuid.uuid4()))
    return template


def test_each_served_route_needs_exactly_its_permission(standin, database_url):
    """Every operation of the served OpenAPI document: the holder of exactly the permission
    of the table gets past authorization (whatever the handler then answers), anybody with
    every other verb gets 403, and the access review asked for that permission."""

    async def routes(client):
        document = (await client.get("/openapi.json")).json()
        return [
            (method.upper(), path)
            for path, operations in document["paths"].items()
            for method in operations
            if path not in OPEN_PATHS
        ]

    served = run(standin, database_url, routes)
    assert ("POST", EVENTS) in served and ("GET", "/metrics") in served
    for index, (method, template) in enumerate(served):
        permission = permission_for(method, template)
        granted, other = f"granted-{index}", f"other-{index}"
        for name in (granted, other):
            standin.add_token(f"{name}-token", User(name, audiences=(AUDIENCE,)))
        if permission.non_resource_path:
            standin.grant(
                f"user:{granted}",
                Grant((permission.verb,), non_resource_urls=(permission.non_resource_path,)),
            )
            standin.grant(f"user:{other}", Grant(("*",), ("*",)))  # resources are not URLs
        else:
            target = permission.resource
            if permission.subresource:
                target += "/" + permission.subresource
            standin.grant(f"user:{granted}", Grant((permission.verb,), (target,)))
            verbs = tuple({"get", "list", "create", "update", "delete"} - {permission.verb})
            standin.grant(f"user:{other}", Grant(verbs, ("*",)))

    async def scenario(client):
        outcomes = []
        for index, (method, template) in enumerate(served):
            path = _concrete(template)
            body = [] if path.endswith("/batch") else {} if method != "GET" else None
            for role in ("granted", "other"):
                standin.access_specs.clear()
                response = await client.request(
                    method, path, json=body, headers=bearer(f"{role}-{index}-token")
                )
                (spec,) = standin.access_specs
                attributes = spec.get("resourceAttributes") or spec["nonResourceAttributes"]
                asked = (attributes["verb"], attributes.get("resource") or attributes["path"])
                outcomes.append((method, template, role, response.status_code, asked))
        return outcomes

    outcomes = run(standin, database_url, scenario)
    wrong = [
        o
        for o in outcomes
        if (o[2] == "granted" and o[3] in (401, 403, 503)) or (o[2] == "other" and o[3] != 403)
    ]
    assert wrong == []
    for method, template, _, _, asked in outcomes:
        permission = permission_for(method, template)
        assert asked == (permission.verb, permission.resource or permission.non_resource_path)
    assert len(outcomes) == 2 * len(served)


def test_probes_and_the_openapi_document_need_no_token(standin, database_url):
    async def scenario(client):
        paths = ("/health", "/health/live", "/health/ready", "/openapi.json", "/openapi.yaml")
        return [(await client.get(path)).status_code for path in paths]

    assert run(standin, database_url, scenario) == [200] * 5
    assert (standin.token_reviews, standin.access_reviews) == (0, 0)


def test_metrics_is_authorized_as_a_non_resource_url(standin, database_url):
    standin.add_token("scraper-token", User("prometheus", audiences=(AUDIENCE,)))
    standin.grant("user:prometheus", Grant(("get",), non_resource_urls=("/metrics",)))

    async def scenario(client):
        return (
            await client.get("/metrics", headers=bearer("scraper-token")),
            await client.get("/metrics", headers=bearer("writer-token")),
        )

    scraper, writer = run(standin, database_url, scenario)
    assert (scraper.status_code, writer.status_code) == (200, 403)
    assert "datastorage_auth_requests_total" in scraper.text
    assert standin.access_specs[0]["nonResourceAttributes"] == {"path": "/metrics", "verb": "get"}
    assert "resourceAttributes" not in standin.access_specs[0]


def test_cors_preflight_is_answered_without_a_token(standin, database_url):
    async def scenario(client):
        return await client.options(
            EVENTS,
            headers={
                "Origin": "https://console.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )

    response = run(
        standin,
        database_url,
        scenario,
        DATASTORAGE_CORS_ALLOW_ORIGINS="https://console.example",
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://console.example"
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert standin.token_reviews == 0


# Acceptance 2: what the caches save.


def test_a_thousand_requests_cost_one_token_review_and_one_access_review_per_permission(
    standin, database_url, db, correlation
):
    requests = [
        lambda: ("GET", EVENTS, None),
        lambda: ("GET", "/api/v1/audit/event-types", None),  # list auditevents: no new review
        lambda: ("POST", EVENTS, make_event(correlation_id=correlation)),
        lambda: ("POST", BATCH, [make_event(correlation_id=correlation)]),  # create again
        lambda: ("POST", NOTIFICATIONS, make_notification(remediation_id=correlation)),
    ]

    async def scenario(client):
        statuses = set()
        for index in range(1000):
            method, path, body = requests[index % len(requests)]()
            params = {"correlation_id": correlation, "limit": 1} if method == "GET" else None
            response = await client.request(
                method, path, json=body, params=params, headers=bearer("writer-token")
            )
            statuses.add(response.status_code)
        return statuses

    assert run(standin, database_url, scenario) == {200, 201}
    assert standin.token_reviews == 1
    # (list, auditevents), (create, auditevents), (create, notifications)
    assert standin.access_reviews == 3
    assert stored_by(db, correlation) == {WRITER: 400}


def test_fifty_concurrent_first_requests_with_a_new_token_share_one_token_review(
    standin, database_url, db, correlation
):
    standin.delay = 0.3  # every review is still in flight when the others arrive

    async def scenario(client):
        return await asyncio.gather(
            *(
                client.post(
                    EVENTS,
                    json=make_event(correlation_id=correlation),
                    headers=bearer("writer-token"),
                )
                for _ in range(50)
            )
        )

    responses = run(standin, database_url, scenario)
    assert [r.status_code for r in responses] == [201] * 50
    assert (standin.token_reviews, standin.access_reviews) == (1, 1)
    assert stored_by(db, correlation) == {WRITER: 50}


def test_a_denial_is_checked_again_only_after_the_denied_ttl(standin, database_url):
    clock = ManualClock()

    async def scenario(client):
        async def attempt():
            response = await client.get(EVENTS, headers=bearer("nobody-token"))
            return response.status_code, standin.access_reviews

        seen = [await attempt(), await attempt()]
        clock.advance(29)
        seen.append(await attempt())
        clock.advance(2)
        seen.append(await attempt())
        return seen

    assert run(standin, database_url, scenario, clock=clock) == [
        (403, 1),
        (403, 1),
        (403, 1),
        (403, 2),
    ]


def test_tokens_are_reviewed_again_after_the_token_ttl_or_their_own_exp(standin, database_url):
    clock = ManualClock()
    short = jwt_with_exp(clock.now + 10, "short-lived")
    standin.add_token(
        short, User(WRITER, groups=("system:serviceaccounts:team-a",), audiences=(AUDIENCE,))
    )

    async def scenario(client):
        async def use(token):
            response = await client.get(EVENTS, params={"limit": 1}, headers=bearer(token))
            assert response.status_code == 200

        await use("writer-token")
        await use(short)
        clock.advance(11)  # past the JWT's exp, well within the 120 s token TTL
        await use("writer-token")
        before_ttl = standin.token_reviews
        await use(short)
        after_exp = standin.token_reviews
        clock.advance(110)  # 121 s since the first review
        await use("writer-token")
        return before_ttl, after_exp, standin.token_reviews

    assert run(standin, database_url, scenario, clock=clock) == (2, 3, 4)


def test_a_failed_review_is_not_cached_and_is_retried_on_the_next_request(
    standin, database_url, db, correlation
):
    async def scenario(client):
        def post():
            event = make_event(correlation_id=correlation)
            return client.post(EVENTS, json=event, headers=bearer("writer-token"))

        standin.fail_status = 500
        failed = await post()
        standin.fail_status = None
        return failed, await post()

    failed, retried = run(standin, database_url, scenario)
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "5"
    assert retried.status_code == 201
    assert standin.token_reviews == 2
    assert stored_by(db, correlation) == {WRITER: 1}


# Acceptance 3: an API server outage.


def test_api_server_outage_keeps_cached_allows_and_fails_closed_for_new_tokens(
    standin, database_url, db, correlation, tmp_path
):
    standin.add_token(
        "new-writer-token",
        User("newcomer", groups=("system:serviceaccounts:team-a",), audiences=(AUDIENCE,)),
    )
    standin.grant(f"user:{WRITER}", Grant(("get",), ("dlq",)))
    clock = ManualClock()

    async def scenario(client):
        def post(token):
            event = make_event(correlation_id=correlation)
            return client.post(EVENTS, json=event, headers=bearer(token))

        warm = await post("writer-token")
        standin.stop()
        cached = await post("writer-token")
        new = await post("new-writer-token")
        clock.advance(121)  # the cached token review has expired: nothing left to answer with
        expired = await post("writer-token")
        standin.start()
        back = await post("new-writer-token")
        dlq = await client.get("/api/v1/admin/dlq", headers=bearer("writer-token"))
        return warm, cached, new, expired, back, dlq.json()

    warm, cached, new, expired, back, dlq = run(
        standin, database_url, scenario, clock=clock, tmp_path=tmp_path
    )
    assert (warm.status_code, cached.status_code) == (201, 201)
    assert new.status_code == 503 and int(new.headers["Retry-After"]) > 0
    assert new.json()["type"].endswith("/service-unavailable")
    assert expired.status_code == 503
    assert back.status_code == 201
    # The writer stored twice; the newcomer only once the API server was back; nothing queued.
    assert stored_by(db, correlation) == {WRITER: 2, "newcomer": 1}
    assert dlq["backend"] and all(stream["depth"] == 0 for stream in dlq["streams"])


# Acceptance 5: the per-caller write budget.


def test_a_caller_over_its_budget_gets_429_and_another_caller_is_unaffected(
    standin, database_url, db, correlation
):
    standin.add_token(
        "second-writer-token",
        User("second", groups=("system:serviceaccounts:team-a",), audiences=(AUDIENCE,)),
    )
    clock = ManualClock()

    async def scenario(client):
        def post(token):
            event = make_event(correlation_id=correlation)
            return client.post(EVENTS, json=event, headers=bearer(token))

        def batch(size):
            events = [make_event(correlation_id=correlation) for _ in range(size)]
            return client.post(BATCH, json=events, headers=bearer("writer-token"))

        first = [await post("writer-token") for _ in range(3)]
        refused = await post("writer-token")
        other = await post("second-writer-token")
        clock.advance(1)  # two units back
        return first, refused, other, await batch(2), await batch(3)

    first, refused, other, batch, big = run(
        standin,
        database_url,
        scenario,
        clock=clock,
        DATASTORAGE_RATE_LIMIT_EVENTS="2",
        DATASTORAGE_RATE_LIMIT_BURST="3",
    )
    assert [r.status_code for r in first] == [201] * 3
    assert refused.status_code == 429
    problem = refused.json()
    assert problem["type"].endswith("/rate-limited") and problem["title"] == "Too many writes"
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["RateLimit-Policy"] == '"writes";q=3;w=2'
    assert refused.headers["RateLimit"] == '"writes";r=0;t=1'
    assert other.status_code == 201
    assert batch.status_code == 201
    assert big.status_code == 429 and big.headers["Retry-After"] == "2"
    # Nothing of the refused requests was stored: 3 singles and one batch of 2.
    assert stored_by(db, correlation) == {WRITER: 5, "second": 1}


def test_refused_requests_are_counted_under_their_route(standin, database_url):
    """A 401 or 403 is answered before the router runs; it is still counted under the route
    it was for (a per-route panel shows refused writes), and only a path no route serves is
    `unmatched`."""
    standin.add_token("scraper-token", User("prometheus", audiences=(AUDIENCE,)))
    standin.grant("user:prometheus", Grant(("get",), non_resource_urls=("/metrics",)))
    event_path = f"{EVENTS}/{uuid.uuid4()}"

    def count(text: str, method: str, route: str, status: int) -> float:
        wanted = (
            f'datastorage_http_requests_total{{method="{method}",route="{route}",'
            f'status="{status}"}}'
        )
        for line in text.splitlines():
            if line.startswith(wanted):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def scenario(client):
        scrape = await client.get("/metrics", headers=bearer("scraper-token"))
        await client.post(EVENTS, json=make_event())
        await client.get(event_path, headers=bearer("nobody-token"))
        await client.get("/api/v1/no-such-route", headers=bearer("writer-token"))
        return scrape.text, (await client.get("/metrics", headers=bearer("scraper-token"))).text

    before, after = run(standin, database_url, scenario)
    template = f"{EVENTS}/{{event_id}}"
    for method, route, status in (
        ("POST", EVENTS, 401),
        ("GET", template, 403),
        ("GET", "unmatched", 404),
    ):
        assert count(after, method, route, status) == count(before, method, route, status) + 1
