"""Authentication and authorization against a Kubernetes API stand-in over real HTTP (SPEC §11).

The stand-in is reached through a kubeconfig file, exactly as the server reaches a cluster with
`KUBECONFIG`; the guarded app is the application's route table behind the `Authentication`
middleware. Call counts on the stand-in show what the caches saved.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from auth_support import ManualClock, guarded_app, jwt_with_exp
from kube_api_standin import Grant, KubeApiStandin, User

from datastorage.auth.authenticator import Authenticator
from datastorage.auth.permissions import PERMISSIONS
from datastorage.auth.ratelimit import RateLimiter
from datastorage.config import load_settings

AUDIENCE = "datastorage"
NAMESPACE = "team-a"
WRITER = "system:serviceaccount:team-a:gateway"
EVENT = {"event_type": "gateway.signal.received", "event_data": {}}


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


def authenticator_for(standin: KubeApiStandin, clock: ManualClock | None = None, **env: str):
    settings = load_settings(
        {
            "DATASTORAGE_AUTH": "kubernetes",
            "KUBECONFIG": str(standin.kubeconfig),
            "DATASTORAGE_AUTH_AUDIENCES": AUDIENCE,
            **env,
        }
    )
    clocks = {"clock": clock, "wall_clock": clock} if clock else {}
    return Authenticator.from_settings(settings, **clocks)


def run(standin, scenario, *, clock=None, limiter=None, **env):
    """Runs `scenario(client, handled)` against a fresh guarded app."""

    async def main():
        authenticator = authenticator_for(standin, clock, **env)
        app, handled = guarded_app(authenticator, limiter)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://ds") as client:
                return await scenario(client, handled)
        finally:
            await authenticator.aclose()

    return asyncio.run(main())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Acceptance 1: who gets in.


def test_missing_unknown_and_wrong_audience_tokens_get_401_with_www_authenticate(standin):
    async def scenario(client, handled):
        answers = [
            await client.post("/api/v1/audit/events", json=EVENT),
            await client.post("/api/v1/audit/events", json=EVENT, headers=bearer("no-such")),
            await client.get("/api/v1/audit/events", headers=bearer("elsewhere-token")),
            await client.get("/api/v1/audit/events", headers={"Authorization": "Basic eDp5"}),
        ]
        return answers, handled

    answers, handled = run(standin, scenario)
    for response in answers:
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("/unauthenticated")
    assert handled.calls == []
    assert standin.token_audiences == [[AUDIENCE], [AUDIENCE]]  # no token: no review at all


def test_a_token_for_other_audiences_is_refused_even_if_the_api_server_accepts_it(standin):
    standin.honour_audiences = False

    async def scenario(client, handled):
        return await client.get("/api/v1/audit/events", headers=bearer("elsewhere-token"))

    response = run(standin, scenario)
    assert response.status_code == 401
    assert standin.token_reviews == 1


def test_a_user_without_rbac_gets_403_naming_verb_and_resource(standin):
    async def scenario(client, handled):
        return await client.post("/api/v1/audit/events", json=EVENT, headers=bearer("nobody-token"))

    response = run(standin, scenario)
    assert response.status_code == 403
    problem = response.json()
    assert problem["type"].endswith("/forbidden")
    assert (problem["verb"], problem["resource"]) == ("create", "auditevents")
    assert "create auditevents" in problem["detail"] and "nobody" in problem["detail"]


def test_permission_bound_only_to_a_group_of_the_caller_is_enough(standin):
    async def scenario(client, handled):
        return await client.post("/api/v1/audit/events", json=EVENT, headers=bearer("writer-token"))

    response = run(standin, scenario)
    assert response.status_code == 201
    assert response.json() == {"recorded_by": WRITER}
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
    return re.sub(r"\{[^}]*\}", "x-42", template)


def test_each_row_of_the_permission_table_needs_exactly_its_permission(standin):
    rows = sorted(PERMISSIONS.items())
    for index, (_, permission) in enumerate(rows):
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

    async def scenario(client, handled):
        outcomes = []
        for index, ((method, template), _) in enumerate(rows):
            path = _concrete(template)
            body = [] if path.endswith("/batch") else None
            for name in (f"granted-{index}", f"other-{index}"):
                response = await client.request(
                    method, path, json=body, headers=bearer(f"{name}-token")
                )
                outcomes.append((method, template, name.split("-")[0], response.status_code))
        return outcomes

    outcomes = run(standin, scenario)
    wrong = [
        o
        for o in outcomes
        if (o[2] == "granted" and o[3] not in (200, 201)) or (o[2] == "other" and o[3] != 403)
    ]
    assert wrong == []
    assert len(outcomes) == 2 * len(PERMISSIONS)


def test_probes_and_the_openapi_document_need_no_token(standin):
    async def scenario(client, handled):
        paths = ("/health", "/health/live", "/health/ready", "/openapi.json", "/openapi.yaml")
        return [(await client.get(path)).status_code for path in paths]

    assert run(standin, scenario) == [200] * 5
    assert (standin.token_reviews, standin.access_reviews) == (0, 0)


def test_metrics_is_authorized_as_a_non_resource_url(standin):
    standin.add_token("scraper-token", User("prometheus", audiences=(AUDIENCE,)))
    standin.grant("user:prometheus", Grant(("get",), non_resource_urls=("/metrics",)))

    async def scenario(client, handled):
        return (
            await client.get("/metrics", headers=bearer("scraper-token")),
            await client.get("/metrics", headers=bearer("writer-token")),
        )

    scraper, writer = run(standin, scenario)
    assert (scraper.status_code, writer.status_code) == (200, 403)
    assert standin.access_specs[0]["nonResourceAttributes"] == {"path": "/metrics", "verb": "get"}
    assert "resourceAttributes" not in standin.access_specs[0]


# Acceptance 2: what the caches save.


def test_a_thousand_requests_cost_one_token_review_and_one_access_review_per_permission(standin):
    requests = [
        ("GET", "/api/v1/audit/events", None),
        ("GET", "/api/v1/audit/event-types", None),  # list auditevents again: no new review
        ("POST", "/api/v1/audit/events", EVENT),
        ("POST", "/api/v1/audit/events/batch", [EVENT]),  # create auditevents again
        ("POST", "/api/v1/audit/notifications", {}),
    ]

    async def scenario(client, handled):
        statuses = set()
        for index in range(1000):
            method, path, body = requests[index % len(requests)]
            response = await client.request(method, path, json=body, headers=bearer("writer-token"))
            statuses.add(response.status_code)
        return statuses

    assert run(standin, scenario) == {200, 201}
    assert standin.token_reviews == 1
    # (list, auditevents), (create, auditevents), (create, notifications)
    assert standin.access_reviews == 3


def test_fifty_concurrent_first_requests_with_a_new_token_share_one_token_review(standin):
    standin.delay = 0.3  # every review is still in flight when the others arrive

    async def scenario(client, handled):
        return await asyncio.gather(
            *(
                client.post("/api/v1/audit/events", json=EVENT, headers=bearer("writer-token"))
                for _ in range(50)
            )
        )

    responses = run(standin, scenario)
    assert [r.status_code for r in responses] == [201] * 50
    assert (standin.token_reviews, standin.access_reviews) == (1, 1)


def test_a_denial_is_checked_again_only_after_the_denied_ttl(standin):
    clock = ManualClock()

    async def scenario(client, handled):
        async def attempt():
            response = await client.get("/api/v1/audit/events", headers=bearer("nobody-token"))
            return response.status_code, standin.access_reviews

        seen = [await attempt(), await attempt()]
        clock.advance(29)
        seen.append(await attempt())
        clock.advance(2)
        seen.append(await attempt())
        return seen

    assert run(standin, scenario, clock=clock) == [(403, 1), (403, 1), (403, 1), (403, 2)]


def test_tokens_are_reviewed_again_after_the_token_ttl_or_their_own_exp(standin):
    clock = ManualClock()
    short = jwt_with_exp(clock.now + 10, "short-lived")
    standin.add_token(
        short, User(WRITER, groups=("system:serviceaccounts:team-a",), audiences=(AUDIENCE,))
    )

    async def scenario(client, handled):
        async def use(token):
            response = await client.get("/api/v1/audit/events", headers=bearer(token))
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

    assert run(standin, scenario, clock=clock) == (2, 3, 4)


def test_a_failed_review_is_not_cached_and_is_retried_on_the_next_request(standin):
    async def scenario(client, handled):
        standin.fail_status = 500
        failed = await client.post(
            "/api/v1/audit/events", json=EVENT, headers=bearer("writer-token")
        )
        standin.fail_status = None
        retried = await client.post(
            "/api/v1/audit/events", json=EVENT, headers=bearer("writer-token")
        )
        return failed, retried, handled

    failed, retried, handled = run(standin, scenario)
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "5"
    assert retried.status_code == 201
    assert standin.token_reviews == 2
    assert handled.by(WRITER) == 1


# Acceptance 3: an API server outage.


def test_api_server_outage_keeps_cached_allows_and_fails_closed_for_new_tokens(standin):
    standin.add_token(
        "new-writer-token",
        User("newcomer", groups=("system:serviceaccounts:team-a",), audiences=(AUDIENCE,)),
    )
    clock = ManualClock()

    async def scenario(client, handled):
        def post(token):
            return client.post("/api/v1/audit/events", json=EVENT, headers=bearer(token))

        warm = await post("writer-token")
        standin.stop()
        cached = await post("writer-token")
        new = await post("new-writer-token")
        clock.advance(121)  # the cached token review has expired: nothing left to answer with
        expired = await post("writer-token")
        standin.start()
        back = await post("new-writer-token")
        return warm, cached, new, expired, back, handled

    warm, cached, new, expired, back, handled = run(standin, scenario, clock=clock)
    assert (warm.status_code, cached.status_code) == (201, 201)
    assert new.status_code == 503 and int(new.headers["Retry-After"]) > 0
    assert new.json()["type"].endswith("/service-unavailable")
    assert expired.status_code == 503
    assert back.status_code == 201
    # The application saw the writer twice and the newcomer only once the API server was back.
    assert handled.by(WRITER) == 2 and handled.by("newcomer") == 1


# Acceptance 5: the per-caller write budget.


def test_a_caller_over_its_budget_gets_429_and_another_caller_is_unaffected(standin):
    standin.add_token(
        "second-writer-token",
        User("second", groups=("system:serviceaccounts:team-a",), audiences=(AUDIENCE,)),
    )
    clock = ManualClock()
    limiter = RateLimiter(2, 3, clock=clock)

    async def scenario(client, handled):
        def post(token):
            return client.post("/api/v1/audit/events", json=EVENT, headers=bearer(token))

        first = [await post("writer-token") for _ in range(3)]
        refused = await post("writer-token")
        other = await post("second-writer-token")
        clock.advance(1)  # two units back
        batch = await client.post(
            "/api/v1/audit/events/batch", json=[EVENT, EVENT], headers=bearer("writer-token")
        )
        big = await client.post(
            "/api/v1/audit/events/batch", json=[EVENT] * 3, headers=bearer("writer-token")
        )
        return first, refused, other, batch, big, handled

    first, refused, other, batch, big, handled = run(
        standin, scenario, clock=clock, limiter=limiter
    )
    assert [r.status_code for r in first] == [201] * 3
    assert refused.status_code == 429
    assert refused.json()["type"].endswith("/rate-limited")
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["RateLimit-Policy"] == '"writes";q=3;w=2'
    assert refused.headers["RateLimit"] == '"writes";r=0;t=1'
    assert other.status_code == 201
    assert batch.status_code == 201
    assert big.status_code == 429 and big.headers["Retry-After"] == "2"
    # Nothing of the refused requests reached the application.
    assert handled.by(WRITER) == 4 and handled.by("second") == 1
