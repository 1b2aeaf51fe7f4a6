"""The OpenAPI document (`openapi.yaml`, the only place a request schema is written), loaded once,
and the `$ref` handling every consumer of its schemas needs."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from typing import Any

import orjson
import yaml

SPEC_URI = "urn:datastorage:openapi"


@functools.cache
def openapi_text() -> str:
    return (resources.files("datastorage") / "openapi.yaml").read_text()


@functools.cache
def openapi_document() -> dict[str, Any]:
    return yaml.safe_load(openapi_text())


@functools.cache
def openapi_json() -> bytes:
    return orjson.dumps(openapi_document())


def inline_refs(schema: Any, document: Mapping[str, Any]) -> Any:
    """The schema with every local `$ref` replaced by its target (the request schemas are not
    recursive), for consumers that do not see the OpenAPI document."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = document
            for part in ref[2:].split("/"):
                target = target[part]
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return inline_refs({**target, **rest}, document)
        return {k: inline_refs(v, document) for k, v in schema.items()}
    if isinstance(schema, list):
        return [inline_refs(v, document) for v in schema]
    return schema


def rebase_refs(schema: Any) -> Any:
    """Point local `#/components/...` refs at the registered OpenAPI document (`SPEC_URI`)."""
    if isinstance(schema, dict):
        return {
            k: (
                SPEC_URI + v
                if k == "$ref" and isinstance(v, str) and v.startswith("#")
                else rebase_refs(v)
            )
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [rebase_refs(v) for v in schema]
    return schema


def resolve_local(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """The schema a `$ref` points at in the served document, or `schema` itself."""
    ref = schema.get("$ref")
    if not ref:
        return schema
    node: Any = openapi_document()
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node
