"""`datastorage operator`: the kopf sidecar (docs/architecture.md).

One process runs three things on one event loop:

- kopf, namespaced by default, with its liveness endpoint at
  `http://0.0.0.0:<operator_health_port>/healthz`; with `DATASTORAGE_OPERATOR_PEERING` set the
  replicas peer through that KopfPeering object and only one is active (`peering`), else each
  runs standalone (the handlers are idempotent);
- the partition maintenance loop (`maintenance.maintenance_loop`: first pass at start-up; with
  peering only on the active replica);
- Prometheus metrics on `operator_metrics_port` (partition maintenance and reconcile families).

Namespaces: `--namespace` (repeatable) / `DATASTORAGE_OPERATOR_NAMESPACES`, else the pod's own
namespace as the service-account mount states it, else `default`. `--all-namespaces` watches
the whole cluster (and then kopf also needs to list namespaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kopf
from prometheus_client import start_http_server

from datastorage.config import Settings
from datastorage.operator import handlers
from datastorage.operator.maintenance import maintenance_loop
from datastorage.operator.peering import PeeringView, own_identity, own_priority
from datastorage.runtime import Runtime

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The operator's own pool: a handful of connections is plenty for one reconcile at a time per
# object, and it must not take connections from the API server's budget.
OPERATOR_POOL_MAX = 4


def own_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def kopf_settings(*, namespaced: bool, peering_lifetime: int = 60) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.peering.lifetime = peering_lifetime
    settings.persistence.finalizer = handlers.FINALIZER
    # Only the Events we post on purpose (kopf.warn), not one per handler log line.
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    # kopf normally scans namespaces and CRDs; a namespaced operator needs neither (and its
    # RBAC grants neither).
    settings.scanning.disabled = namespaced
    return settings


def build_registry(settings: Settings, peering: PeeringView | None = None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        # An explicit registry has none of kopf's default logins: in-cluster service account
        # first, else $KUBECONFIG / ~/.kube/config, through the kubernetes client's loaders.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def open_catalog(memo: Any, logger: Any, **_: Any) -> None:
        # The operator's writes answer "unavailable" during an outage (kopf retries the
        # handler); they never queue in a DLQ of their own.
        runtime = Runtime(
            settings.replace(
                db_pool_min=1, db_pool_max=min(settings.db_pool_max, OPERATOR_POOL_MAX)
            ),
            application_name="datastorage-operator",
            use_dlq=False,
            run_drain=False,
        )
        await runtime.open()
        memo.runtime = runtime
        memo.locks = handlers.new_locks()
        memo.reconciler = handlers.WorkflowReconciler(runtime.catalog)
        memo.maintenance = asyncio.get_running_loop().create_task(
            maintenance_loop(
                settings,
                peering.active if peering is not None else None,
                standby_check=max(1.0, settings.operator_peering_lifetime / 4),
            ),
            name="partition maintenance",
        )

    @kopf.on.cleanup(registry=registry)
    async def close_catalog(memo: Any, **_: Any) -> None:
        task = getattr(memo, "maintenance", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        runtime = getattr(memo, "runtime", None)
        if runtime is not None:
            await runtime.close()

    return registry


def run_operator(
    settings: Settings, *, namespaces: Sequence[str] = (), all_namespaces: bool = False
) -> int:
    settings.require_database_url()
    watched = [] if all_namespaces else list(namespaces) or [own_namespace()]
    identity, priority = own_identity(), own_priority(settings)
    peering = None
    if settings.operator_peering:
        peering = PeeringView(
            settings.operator_peering, None if all_namespaces else watched[0], identity, priority
        )
    start_http_server(settings.operator_metrics_port)
    log.info(
        "operator starting: %s; metrics on :%d, liveness on :%d/healthz",
        "all namespaces" if all_namespaces else "namespaces " + ", ".join(watched),
        settings.operator_metrics_port,
        settings.operator_health_port,
    )
    if peering is not None:
        log.info("peering through %s as %s with priority %d", peering.name, identity, priority)
    asyncio.run(
        kopf.operator(
            registry=build_registry(settings, peering),
            settings=kopf_settings(
                namespaced=not all_namespaces,
                peering_lifetime=settings.operator_peering_lifetime,
            ),
            standalone=peering is None,
            peering_name=settings.operator_peering or None,
            priority=priority,
            identity=identity,  # type: ignore[arg-type]  # kopf Identity is a str NewType
            clusterwide=all_namespaces,
            namespaces=watched,
            liveness_endpoint=f"http://0.0.0.0:{settings.operator_health_port}/healthz",
            memo=kopf.Memo(),
        )
    )
    log.info("operator stopped")
    return 0
