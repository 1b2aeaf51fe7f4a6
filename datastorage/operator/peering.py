"""One active operator across replicas (docs/operations.md), through kopf peering.

Every replica of the operator registers in one `KopfPeering` object (`ClusterKopfPeering` when it
watches all namespaces), named by `DATASTORAGE_OPERATOR_PEERING`, with its own priority; kopf
pauses every replica that sees a live peer of a higher priority, so exactly one handles
RemediationWorkflows. Priorities must differ (kopf pauses *all* replicas of equal priority), so
unless one is configured each process draws a random one out of 2^31.

kopf does not tell user code whether it is paused, and partition maintenance is not a kopf
handler, so `PeeringView.active` reads the same peering object and applies kopf's rule: this
replica is active when its own record is live and no other live record has a priority at least
as high. A record is live until its `lastseen` plus `lifetime`: a replica killed without a
goodbye is replaced within `DATASTORAGE_OPERATOR_PEERING_LIFETIME` seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import socket
from typing import Any

from datastorage.config import Settings

log = logging.getLogger(__name__)

GROUP = "kopf.dev"
VERSION = "v1"
MAX_PRIORITY = 2**31 - 1
DEFAULT_LIFETIME = 60  # what kopf assumes for a record that does not state its lifetime


def own_priority(settings: Settings) -> int:
    return settings.operator_priority or random.SystemRandom().randint(1, MAX_PRIORITY)


def own_identity() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{random.SystemRandom().randrange(1 << 32):08x}"


def _live(record: dict[str, Any], now: dt.datetime) -> bool:
    try:
        seen = dt.datetime.fromisoformat(str(record["lastseen"]))
    except (KeyError, ValueError):
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=dt.UTC)
    lifetime = record.get("lifetime", DEFAULT_LIFETIME)
    return seen + dt.timedelta(seconds=int(lifetime)) > now


def is_active(status: dict[str, Any], identity: str, priority: int, now: dt.datetime) -> bool:
    """kopf's rule on a peering object's `status` (identity -> record), seen from `identity`."""
    mine = status.get(identity)
    if not isinstance(mine, dict) or not _live(mine, now):
        return False  # not registered yet, or kopf stopped touching it
    return not any(
        other != identity
        and isinstance(record, dict)
        and _live(record, now)
        and int(record.get("priority", 0)) >= priority
        for other, record in status.items()
    )


class PeeringView:
    """Reads the peering object to tell whether this replica is the active one."""

    def __init__(self, name: str, namespace: str | None, identity: str, priority: int) -> None:
        self.name = name
        self.namespace = namespace  # None: the cluster-wide peering
        self.identity = identity
        self.priority = priority
        self._api: Any = None
        self._was_active: bool | None = None

    def _read(self) -> dict[str, Any]:
        from kubernetes import client, config

        if self._api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._api = client.CustomObjectsApi()
        if self.namespace is None:
            return self._api.get_cluster_custom_object(
                GROUP, VERSION, "clusterkopfpeerings", self.name
            )
        return self._api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "kopfpeerings", self.name
        )

    async def active(self) -> bool:
        try:
            body = await asyncio.to_thread(self._read)
        except Exception as exc:  # API unreachable or object missing: do not act (fail closed)
            log.warning("cannot read peering %s: %s; standing by", self.name, exc)
            return False
        now = dt.datetime.now(dt.UTC)
        active = is_active(body.get("status") or {}, self.identity, self.priority, now)
        if active != self._was_active:
            log.info(
                "operator %s (priority %d) is %s",
                self.identity,
                self.priority,
                "the active replica" if active else "standing by",
            )
            self._was_active = active
        return active
