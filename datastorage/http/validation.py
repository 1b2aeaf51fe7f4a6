"""Problems from the schemas: the compiled validator, raising, and strict query decoding.

`RequestValidator` wraps the compiled `schemas.SchemaValidator` with methods that raise a
`Problem` listing every failing field; `strict_query` reads query parameters as strict UTF-8.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request

from datastorage.http.problems import validation_error
from datastorage.schemas import SchemaValidator, count_failure


class RequestValidator:
    """The runtime's compiled `SchemaValidator`, with methods that raise a `Problem`."""

    def __init__(self, schemas: SchemaValidator) -> None:
        self.schemas = schemas
        self.body_errors = schemas.body_errors
        self.parameter_values = schemas.parameter_values

    def body(self, operation_id: str, data: Any) -> None:
        errors = self.body_errors(operation_id, data)
        if errors:
            raise validation_error(errors)

    def parameters(self, operation_id: str, request: Request) -> dict[str, Any]:
        """The query and path parameters of the request, checked against the document."""
        given = {**strict_query(request), **request.path_params}
        values, errors = self.parameter_values(operation_id, given)
        if errors:
            raise validation_error(errors)
        return values


def strict_query(request: Request) -> dict[str, str]:
    """The query parameters (the last of a repeated name wins), decoded as strict UTF-8: a
    value that is not UTF-8 is a 400 naming the parameter, not a silent U+FFFD."""
    values: dict[str, str] = {}
    errors: dict[str, str] = {}
    for pair in request.scope["query_string"].split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8", "replace")
        try:
            values[name] = unquote_to_bytes(raw_value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            errors[name] = "must be valid UTF-8"
    if errors:
        for name in errors:
            count_failure(name, "encoding")
        raise validation_error(errors)
    return values
