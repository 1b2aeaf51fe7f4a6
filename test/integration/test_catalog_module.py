"""`datastorage.services.catalog.Catalog` called in-process, the way the operator calls it, against this
worker's PostgreSQL; and the catalog endpoints while the database is unreachable (503)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from support import free_port
from workflow_helpers import WORKFLOWS, search_body, unique, workflow_body

from datastorage.app import build_context, create_app
from datastorage.config import load_settings
from datastorage.runtime import Runtime
from datastorage.services.catalog import (
    Catalog,
    DuplicateVersion,
    ImmutableFields,
    InvalidTransitionError,
    InvalidWorkflow,
    WorkflowNotFound,
)


def run_with_catalog(database_url: str, body: Callable[[Catalog, list], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        settings = load_settings(
            {"DATASTORAGE_DATABASE_URL": database_url, "DATASTORAGE_DB_POOL_MIN": "1"}
        )
        runtime = Runtime(settings, application_name="catalog-test", use_dlq=False)
        spawned: list = []
        catalog = Catalog(runtime.db, runtime.audit, spawn=spawned.append)
        async with runtime:
            try:
                return await body(catalog, spawned)
            finally:
                for coro in spawned:
                    coro.close()

    return asyncio.run(main())


def test_catalog_module_create_find_and_lifecycle(database_url, db):
    name = unique("operator")

    async def scenario(catalog: Catalog, spawned: list) -> None:
        created = await catalog.create(workflow_body(name, "1.0.0"), created_by="operator")
        assert created["created_by"] == "operator" and created["is_latest_version"]
        assert await catalog.find_version(name, "1.0.0") == created
        assert await catalog.find_version(name, "9.9.9") is None
        assert await catalog.get(created["workflow_id"]) == created
        with pytest.raises(DuplicateVersion) as duplicate:
            await catalog.create(workflow_body(name, "1.0.0"))
        assert duplicate.value.workflow_id == created["workflow_id"]

        with pytest.raises(ImmutableFields) as immutable:
            await catalog.update(created["workflow_id"], {"content": "x", "status": "active"})
        assert immutable.value.fields == ["content"]
        deprecated = await catalog.update(created["workflow_id"], {"status": "deprecated"})
        assert deprecated["status"] == "deprecated"
        with pytest.raises(InvalidTransitionError) as invalid:
            await catalog.disable(created["workflow_id"], reason="gone", updated_by=None)
        assert (invalid.value.current, invalid.value.target) == ("deprecated", "disabled")

        with pytest.raises(WorkflowNotFound):
            await catalog.get(str(uuid.uuid4()))
        with pytest.raises(WorkflowNotFound):
            await catalog.update("not-a-uuid", {"status": "active"})

        v2 = await catalog.create(workflow_body(name, "2.0.0"))
        assert [v["version"] for v in await catalog.versions(name)] == ["2.0.0", "1.0.0"]
        assert await catalog.versions(unique("nobody")) == []
        rows, total = await catalog.list({"workflow_name": name, "latest_only": True}, 10, 0)
        assert (total, [r["workflow_id"] for r in rows]) == (1, [v2["workflow_id"]])

    run_with_catalog(database_url, scenario)
    (count,) = db.execute(
        "SELECT count(*) FROM audit_events WHERE correlation_id = %s", (name,)
    ).fetchone()
    assert count == 3  # created 1.0.0, updated (deprecated), created 2.0.0


def test_catalog_module_validates_like_the_api(database_url):
    async def scenario(catalog: Catalog, spawned: list) -> None:
        body = workflow_body(unique("invalid"), severity="urgent")
        del body["labels"]["signal_type"]
        with pytest.raises(InvalidWorkflow) as caught:
            await catalog.create(body)
        assert set(caught.value.field_errors) == {"labels.severity", "labels.signal_type"}
        with pytest.raises(InvalidWorkflow) as caught:
            await catalog.create(workflow_body(unique("author")), created_by="x" * 256)
        assert list(caught.value.field_errors) == ["created_by"]
        with pytest.raises(InvalidWorkflow):
            await catalog.search({"filters": {"signal_type": "x"}})

    run_with_catalog(database_url, scenario)


def test_catalog_module_hands_the_search_event_to_spawn(database_url):
    async def scenario(catalog: Catalog, spawned: list) -> None:
        result = await catalog.search(search_body(unique("Spawned")))
        assert result["workflows"] == []
        assert len(spawned) == 1  # the audit write waits for whoever runs it

    run_with_catalog(database_url, scenario)


def test_catalog_endpoints_answer_503_while_the_database_is_unreachable():
    settings = load_settings(
        {
            "DATASTORAGE_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
            "DATASTORAGE_DB_POOL_MIN": "0",
            "DATASTORAGE_DB_POOL_TIMEOUT": "0.3",
        }
    )

    async def main() -> list[httpx.Response]:
        ctx = build_context(settings)
        app = create_app(settings, ctx)
        await ctx.runtime.db.open()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return [
                    await client.get(WORKFLOWS),
                    await client.get(f"{WORKFLOWS}/{uuid.uuid4()}"),
                    await client.post(WORKFLOWS, json=workflow_body("down")),
                    await client.post(f"{WORKFLOWS}/search", json=search_body("Down")),
                    await client.patch(f"{WORKFLOWS}/{uuid.uuid4()}/disable"),
                ]
        finally:
            await ctx.runtime.db.close()

    for response in asyncio.run(main()):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == str(settings.retry_after)
        assert response.json()["type"].endswith("/service-unavailable")
