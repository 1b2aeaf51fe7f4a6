"""A Kubernetes API stand-in for the auth tests: TokenReview and SubjectAccessReview over HTTP.

A real HTTP server (stdlib, in a thread, so it never shares the event loop of the code under
test) answers
  POST /apis/authentication.k8s.io/v1/tokenreviews
  POST /apis/authorization.k8s.io/v1/subjectaccessreviews
from two tables: tokens -> users (username, uid, groups, extra, audiences) and RBAC-like grants
bound to a user or a group. It insists on the client credential written into its kubeconfig (so a
test also proves the kubeconfig was used), counts the reviews it answered, keeps the review
specs it received (without the token), can be made to fail with an HTTP status or to answer
slowly, and can be stopped and started again on the same port.

Like the real API server, a TokenReview response echoes the spec, token included: the code under
test must not log response bodies.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFAULT_AUDIENCE = "https://kubernetes.default.svc"
GROUP = "datastorage.kubernaut.ai"


@dataclass
class User:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ("system:authenticated",)
    extra: dict[str, list[str]] = field(default_factory=dict)
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)


@dataclass
class Grant:
    """One rule of a Role/ClusterRole bound to a subject (`user:NAME` or `group:NAME`)."""

    verbs: tuple[str, ...]
    resources: tuple[str, ...] = ()  # "auditevents", "auditevents/export", "*"
    namespaces: tuple[str, ...] | None = None  # None: cluster-wide (a ClusterRoleBinding)
    non_resource_urls: tuple[str, ...] = ()
    api_group: str = GROUP

    def allows(self, spec: dict[str, Any]) -> bool:
        if spec.get("nonResourceAttributes"):
            attrs = spec["nonResourceAttributes"]
            return attrs.get("path") in self.non_resource_urls and self._verb(attrs)
        attrs = spec.get("resourceAttributes") or {}
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource += "/" + attrs["subresource"]
        return (
            self._verb(attrs)
            and attrs.get("group") in (self.api_group, "*")
            and ("*" in self.resources or resource in self.resources)
            and (self.namespaces is None or attrs.get("namespace") in self.namespaces)
        )

    def _verb(self, attrs: dict[str, Any]) -> bool:
        return "*" in self.verbs or attrs.get("verb") in self.verbs


class KubeApiStandin:
    def __init__(self, credential: str = "standin-service-account-token") -> None:
        self.credential = credential
        self.tokens: dict[str, User] = {}
        self.grants: dict[str, list[Grant]] = {}
        self.token_reviews = 0
        self.access_reviews = 0
        self.access_specs: list[dict[str, Any]] = []
        self.token_audiences: list[list[str]] = []
        self.fail_status: int | None = None
        self.delay = 0.0
        # False: answer like an authenticator that ignores spec.audiences (the token's own
        # audiences come back), so the caller's own audience check is what is left.
        self.honour_audiences = True
        self.port = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Tables.
    def add_token(self, token: str, user: User) -> None:
        self.tokens[token] = user

    def grant(self, subject: str, *grants: Grant) -> None:
        self.grants.setdefault(subject, []).extend(grants)

    def count(self, path: str) -> None:
        """Every review call counts, answered or failed."""
        with self._lock:
            if path.endswith("/tokenreviews"):
                self.token_reviews += 1
            elif path.endswith("/subjectaccessreviews"):
                self.access_reviews += 1

    def reset_counts(self) -> None:
        with self._lock:
            self.token_reviews = self.access_reviews = 0
            self.access_specs.clear()
            self.token_audiences.clear()

    # Lifecycle.
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> KubeApiStandin:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        assert self._thread is not None
        self._thread.join(10)
        self._server = None

    def write_kubeconfig(self, path: Path, namespace: str = "team-a") -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                    "users": [{"name": "datastorage", "user": {"token": self.credential}}],
                    "contexts": [
                        {
                            "name": "standin",
                            "context": {
                                "cluster": "standin",
                                "user": "datastorage",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "standin",
                }
            )
        )
        return path

    # Reviews.
    def review_token(self, spec: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.token_audiences.append(list(spec.get("audiences") or []))
        user = self.tokens.get(spec.get("token", ""))
        if user is None:
            return {"authenticated": False, "error": "invalid bearer token"}
        asked = (spec.get("audiences") or []) if self.honour_audiences else []
        audiences = [a for a in asked if a in user.audiences] if asked else list(user.audiences)
        if not audiences:
            return {"authenticated": False, "error": "token audiences are invalid"}
        return {
            "authenticated": True,
            "audiences": audiences,
            "user": {
                "username": user.username,
                "uid": user.uid,
                "groups": list(user.groups),
                "extra": user.extra,
            },
        }

    def review_access(self, spec: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.access_specs.append(spec)
        subjects = [f"user:{spec.get('user', '')}"]
        subjects += [f"group:{group}" for group in spec.get("groups") or []]
        for subject in subjects:
            for grant in self.grants.get(subject, []):
                if grant.allows(spec):
                    return {"allowed": True, "reason": f"bound to {subject}"}
        return {"allowed": False, "reason": "no RBAC policy matched"}


class _Handler(BaseHTTPRequestHandler):
    owner: KubeApiStandin
    protocol_version = "HTTP/1.0"  # one request per connection: stop() really stops answering

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — quiet
        pass

    def do_POST(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        owner.count(self.path)
        if owner.delay:
            time.sleep(owner.delay)
        if self.headers.get("Authorization") != f"Bearer {owner.credential}":
            self._answer(401, {"kind": "Status", "status": "Failure", "code": 401})
            return
        if owner.fail_status:
            self._answer(owner.fail_status, {"kind": "Status", "code": owner.fail_status})
            return
        spec = body.get("spec") or {}
        if self.path == "/apis/authentication.k8s.io/v1/tokenreviews":
            status = owner.review_token(spec)
        elif self.path == "/apis/authorization.k8s.io/v1/subjectaccessreviews":
            status = owner.review_access(spec)
        else:
            self._answer(404, {"kind": "Status", "code": 404})
            return
        self._answer(201, {**body, "status": status})

    def _answer(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
