"""Tamper-evident log endpoints (docs/tamper-evident-log.md): parse, call `LogService`, respond.

Hashes are standard padded base64. The checkpoint is served byte for byte as it was signed.
When the server has no signing key the log is off and every endpoint answers 404 `not-found`
saying so (a client cannot tell an empty log from a disabled one otherwise).
"""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import Response

from datastorage.http.audit import parse_uuid_path
from datastorage.http.context import context, json_response
from datastorage.http.problems import not_found
from datastorage.services.ledger import LogService

TEXT = "text/plain; charset=utf-8"


def _log(request: Request) -> LogService:
    service = context(request).log
    if service is None:
        raise not_found(
            "the tamper-evident log is not enabled on this server "
            "(no DATASTORAGE_LOG_SIGNING_KEY_FILE)"
        )
    return service


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


async def checkpoint(request: Request) -> Response:
    note = await _log(request).checkpoint()
    return Response(note.encode(), media_type=TEXT)


async def inclusion_proof(request: Request) -> Response:
    service = _log(request)
    params = context(request).validator.parameters("getLogInclusionProof", request)
    event_id = parse_uuid_path(request, "event_id")
    proof = await service.inclusion(event_id, params.get("tree_size"))
    return json_response(
        {
            "event_id": proof.event_id,
            "leaf_index": proof.leaf_index,
            "tree_size": proof.tree_size,
            "leaf_hash": _b64(proof.leaf_hash),
            "inclusion_path": [_b64(h) for h in proof.path],
        }
    )


async def consistency_proof(request: Request) -> Response:
    service = _log(request)
    params = context(request).validator.parameters("getLogConsistencyProof", request)
    first, second = params["first"], params["second"]
    proof = await service.consistency(first, second)
    return json_response({"first": first, "second": second, "proof": [_b64(h) for h in proof]})


async def verifier_key(request: Request) -> Response:
    return Response((_log(request).verifier_key + "\n").encode(), media_type=TEXT)
