"""TokenReview and SubjectAccessReview calls to the Kubernetes API (docs/auth.md).

Connection settings come from the standard client configuration, read by the `kubernetes`
package's own loader (already a dependency, for the operator): the kubeconfig named by
`KUBECONFIG` when set, else the in-cluster service account. That loader covers what users
expect (client certificates, CA data, exec plugins, token rotation of projected service-account
tokens through its refresh hook). The calls themselves go through `httpx.AsyncClient`: two small
JSON POSTs do not need a generated async client (`kubernetes_asyncio` would add a second copy of
every API model), and httpx gives us a pooled, non-blocking client with a hard timeout.

Nothing here logs or embeds the reviewed token: errors name the review kind and the HTTP status,
never a request or response body.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from datastorage.auth.permissions import API_GROUP, Permission
from datastorage.metrics import AUTH_REVIEW_DURATION

IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


class ReviewUnavailable(Exception):
    """The API server could not be reached or did not answer a review properly."""


class KubeConfigError(ValueError):
    """No usable Kubernetes client configuration."""


@dataclass(frozen=True)
class Identity:
    """The user a TokenReview vouched for; hashable so it can key the access cache."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_review(cls, user: Mapping[str, Any]) -> Identity:
        extra = user.get("extra") or {}
        return cls(
            username=str(user.get("username") or ""),
            uid=str(user.get("uid") or ""),
            groups=tuple(str(group) for group in user.get("groups") or ()),
            extra=tuple(sorted((str(k), tuple(map(str, v or ()))) for k, v in extra.items())),
        )


@dataclass(frozen=True)
class TokenReviewResult:
    identity: Identity | None  # None: not authenticated
    audiences: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessReviewResult:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class KubeConnection:
    """Where the API server is and how to present ourselves to it."""

    server: str
    namespace: str  # our own namespace: the default namespace of access reviews
    verify: ssl.SSLContext | bool = True
    proxy: str | None = None
    credentials: Callable[[], str | None] = field(default=lambda: None)  # Authorization value


def _ssl_context(config: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
    if not config.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert_file:
        context.load_cert_chain(config.cert_file, config.key_file)
    return context


def load_connection(kubeconfig: str | None) -> KubeConnection:
    """The kubeconfig file when given, else the in-cluster service account."""
    from kubernetes import client, config  # the loader only; imported where auth is on

    configuration = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            _, current = config.list_kube_config_contexts(config_file=kubeconfig)
            namespace = (current or {}).get("context", {}).get("namespace") or "default"
        else:
            config.load_incluster_config(client_configuration=configuration)
            namespace = IN_CLUSTER_NAMESPACE_FILE.read_text().strip() or "default"
    except (config.ConfigException, OSError, KeyError, TypeError) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster service account"
        raise KubeConfigError(f"cannot load {where}: {exc}") from exc
    server = configuration.host.rstrip("/")
    verify: ssl.SSLContext | bool = (
        _ssl_context(configuration) if server.startswith("https") else True
    )
    return KubeConnection(
        server=server,
        namespace=namespace,
        verify=verify,
        proxy=configuration.proxy or None,
        credentials=lambda: configuration.get_api_key_with_prefix("BearerToken"),
    )


class ReviewClient:
    """Posts reviews to one API server over a pooled connection."""

    def __init__(self, connection: KubeConnection, timeout: float) -> None:
        self.connection = connection
        self._http = httpx.AsyncClient(
            base_url=connection.server,
            verify=connection.verify,
            proxy=connection.proxy,
            timeout=httpx.Timeout(timeout),
            trust_env=False,  # like the kubernetes client: only the kubeconfig's proxy counts
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def review_token(self, token: str, audiences: Sequence[str]) -> TokenReviewResult:
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = list(audiences)
        status = await self._post("token", TOKEN_REVIEWS, "TokenReview", spec)
        user = status.get("user") or {}
        if status.get("authenticated") is not True or not user.get("username"):
            return TokenReviewResult(None)
        return TokenReviewResult(
            Identity.from_review(user), tuple(map(str, status.get("audiences") or ()))
        )

    async def review_access(
        self, identity: Identity, namespace: str, permission: Permission
    ) -> AccessReviewResult:
        spec: dict[str, Any] = {
            "user": identity.username,
            "uid": identity.uid,
            "groups": list(identity.groups),
            "extra": {key: list(values) for key, values in identity.extra},
        }
        if permission.non_resource_path:
            spec["nonResourceAttributes"] = {
                "path": permission.non_resource_path,
                "verb": permission.verb,
            }
        else:
            spec["resourceAttributes"] = {
                "group": API_GROUP,
                "namespace": namespace,
                "resource": permission.resource,
                "subresource": permission.subresource,
                "verb": permission.verb,
            }
        status = await self._post("access", ACCESS_REVIEWS, "SubjectAccessReview", spec)
        allowed = status.get("allowed") is True and status.get("denied") is not True
        return AccessReviewResult(allowed, str(status.get("reason") or ""))

    async def _post(self, kind: str, path: str, review: str, spec: dict[str, Any]) -> Any:
        group = "authentication" if kind == "token" else "authorization"
        body = {"apiVersion": f"{group}.k8s.io/v1", "kind": review, "spec": spec}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        started = time.perf_counter()
        try:
            # The credential hook may re-read a rotated token file (or run an exec plugin).
            credentials = await asyncio.to_thread(self.connection.credentials)
            if credentials:
                headers["Authorization"] = credentials
            response = await self._http.post(path, content=orjson.dumps(body), headers=headers)
        except (httpx.HTTPError, OSError) as exc:
            raise ReviewUnavailable(f"{review}: {type(exc).__name__}") from None
        finally:
            AUTH_REVIEW_DURATION.labels(kind).observe(time.perf_counter() - started)
        if response.status_code not in (200, 201):
            raise ReviewUnavailable(f"{review}: API server answered HTTP {response.status_code}")
        try:
            status = orjson.loads(response.content).get("status")
        except (orjson.JSONDecodeError, AttributeError):
            status = None
        if not isinstance(status, dict):
            raise ReviewUnavailable(f"{review}: API server answered without a status")
        return status
