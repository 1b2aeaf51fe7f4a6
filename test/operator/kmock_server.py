"""A Kubernetes API stand-in for the operator tests: kmock's stateful emulator on loopback.

Run as `python kmock_server.py PORT`. kmock 0.8's `KubernetesEmulator` keeps objects in memory
and serves discovery, CRUD, merge/JSON patches, finalizers and watches. What it lacks for kopf
(and for the `kubernetes` client) is added by `RealisticEmulator`:

- `metadata.resourceVersion` bumped on every write, plus `uid`, `creationTimestamp`,
  `generation` and the namespace taken from the URL on create;
- `metadata.generation` incremented when a write changes `spec` (the real API server's rule,
  which `status.observedGeneration` is compared against);
- the `status` subresource kept apart: a PATCH of `/status` changes only `status`, a PATCH of
  the object ignores `status` (for resources that declare the subresource);
- `metadata.generateName` (kopf posts its Events with it);
- a failed JSON-patch `test` answers 422, as the API server does, so kopf re-reads and retries
  instead of repeating the stale patch;
- 201 on create, watch streams declared as JSON, and lists carrying `kind`/`apiVersion`.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import secrets
import signal
import sys
import uuid
from typing import Any

import jsonpatch
import kmock

WORKFLOWS = "kubernaut.ai/v1alpha1/remediationworkflows"
PEERINGS_GROUP = "kopf.dev/v1"


def _merge(base: Any, patch: Any) -> Any:
    """RFC 7386 merge patch (null deletes a key)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _apply(body: dict[str, Any], patch: Any) -> dict[str, Any]:
    if isinstance(patch, list):
        return jsonpatch.apply_patch(copy.deepcopy(body), patch)
    return _merge(body, patch)


class RealisticEmulator(kmock.KubernetesEmulator):
    _versions = itertools.count(1)

    def _has_status_subresource(self, resource: Any) -> bool:
        return resource in self.resources and "status" in self.resources[resource].subresources

    async def _handle(self, request):  # noqa: ANN001 - kmock's own signature
        try:
            if request.resource is not None and isinstance(request.data, dict | list):
                self._stamp(request)
            return await super()._handle(request)
        except jsonpatch.JsonPatchException as exc:  # a failed `test` op: stale resourceVersion
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc

    def _stamp(self, request) -> None:  # noqa: ANN001
        version = str(next(self._versions))
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + secrets.token_hex(3)
            meta["resourceVersion"] = version
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault(
                "creationTimestamp", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            meta["generation"] = 1
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
        elif request.action == kmock.action.UPDATE and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return  # kmock answers 404
            current = copy.deepcopy(self.objects[key].raw)
            self._confine_to_subresource(request)
            patched = _apply(current, request.data)  # may raise JsonPatchException -> 422
            meta_changes: dict[str, Any] = {"resourceVersion": version}
            if patched.get("spec") != current.get("spec"):
                meta_changes["generation"] = current["metadata"].get("generation", 1) + 1
            if isinstance(request.data, dict):
                request.data.setdefault("metadata", {}).update(meta_changes)
            else:
                request.data.extend(
                    {"op": "add", "path": f"/metadata/{field}", "value": value}
                    for field, value in meta_changes.items()
                )

    def _confine_to_subresource(self, request) -> None:  # noqa: ANN001
        if not self._has_status_subresource(request.resource):
            return
        on_status = request.subresource == "status"

        def allowed(path: str) -> bool:
            is_status = path == "/status" or path.startswith("/status/")
            return is_status if on_status else not is_status

        if isinstance(request.data, dict):
            for field in list(request.data):
                if (field == "status") != on_status:
                    del request.data[field]
        else:
            request.data[:] = [
                op for op in request.data if op.get("op") == "test" or allowed(op.get("path", ""))
            ]

    async def _serve_create(self, request):  # noqa: ANN001
        # 201 Created, as the API server answers (the `kubernetes` client maps only 201).
        return kmock.Response(status=201, payload=await super()._serve_create(request))

    def _serve_watch(self, request):  # noqa: ANN001
        # client-go and the `kubernetes` client refuse kmock's application/octet-stream.
        return kmock.Response(
            payload=super()._serve_watch(request), headers={"Content-Type": "application/json"}
        )

    async def _serve_list(self, request):  # noqa: ANN001
        result = await super()._serve_list(request)
        resource = request.resource
        info = self.resources.get(resource)
        kind = (info.kind if info and info.kind else "Unknown") + "List"
        api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        return {
            "apiVersion": api_version,
            "kind": kind,
            **result,
            "metadata": {"resourceVersion": str(next(self._versions))},
        }


async def serve(port: int) -> None:
    async with RealisticEmulator() as k8s, kmock.Server(k8s, host="127.0.0.1", port=port) as srv:
        k8s.resources.load_bundled()
        k8s.resources[WORKFLOWS] = kmock.ResourceInfo(
            kind="RemediationWorkflow",
            singular="remediationworkflow",
            namespaced=True,
            shortnames={"rwf"},
            subresources={"status"},
            verbs={
                "create",
                "delete",
                "get",
                "list",
                "patch",
                "update",
                "watch",
                "deletecollection",
            },
        )
        # kopf's peering objects (its CRD declares no status subresource: kopf patches the
        # object's status directly).
        for plural, kind, namespaced in (
            ("kopfpeerings", "KopfPeering", True),
            ("clusterkopfpeerings", "ClusterKopfPeering", False),
        ):
            k8s.resources[f"{PEERINGS_GROUP}/{plural}"] = kmock.ResourceInfo(
                kind=kind,
                singular=plural[:-1],
                namespaced=namespaced,
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            )
        print(f"kmock {kmock.__version__} Kubernetes emulator on {srv.url}", flush=True)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
