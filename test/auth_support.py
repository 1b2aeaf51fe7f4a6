"""Helpers for the auth tests: a settable clock, JWT-shaped tokens, and the real application
served in-process with `DATASTORAGE_AUTH=kubernetes` against a Kubernetes API stand-in.

`serving(settings, clock)` builds the app exactly as `datastorage serve` does (`build_context`
+ `create_app`, its lifespan opening the runtime and closing the authenticator) and yields an
httpx client talking to it over ASGI; `clock` replaces the clocks of the review caches, token
expiry and the rate limiter.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from datastorage.app import build_context, create_app
from datastorage.config import Settings, load_settings


class ManualClock:
    """A clock the test moves by hand (serves as monotonic and as wall clock)."""

    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def jwt_with_exp(exp: float, subject: str) -> str:
    """A token shaped like a JWT (unsigned: only the stand-in's table says who it is)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part({'sub': subject, 'exp': int(exp)})}.c2lnbmF0dXJl"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_settings(database_url: str, kubeconfig: Path, **env: str) -> Settings:
    return load_settings(
        {
            "DATASTORAGE_DATABASE_URL": database_url,
            "DATASTORAGE_AUTH": "kubernetes",
            "KUBECONFIG": str(kubeconfig),
            "DATASTORAGE_DB_POOL_MIN": "1",
            **env,
        }
    )


@contextlib.asynccontextmanager
async def serving(settings: Settings, clock: ManualClock | None = None) -> AsyncIterator[Any]:
    """The real application, lifespan included, behind an in-process httpx client."""
    app = create_app(settings, build_context(settings, clock))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ds") as client:
            yield client
