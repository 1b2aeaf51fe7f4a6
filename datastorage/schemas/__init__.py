"""The OpenAPI document and the request validators compiled from it, one concept per module.

- `document`: loading `openapi.yaml` (the only place a request schema is written), `$ref`s;
- `formats`: the strict `date-time` / `date` / `uuid` checks;
- `messages`: field paths and the wording of a failing field;
- `failures`: the validation-failure metric and its bounded field label;
- `coercion`: query text to schema types, integral floats to `int`;
- `fast`: the native yes/no check that spares valid bodies the full report;
- `validator`: `SchemaValidator`, which puts those together per operation.

The names callers use are re-exported here.
"""

from datastorage.schemas.document import openapi_document, openapi_json, openapi_text
from datastorage.schemas.failures import count_failure, metric_field
from datastorage.schemas.messages import collect_field_errors, field_path
from datastorage.schemas.validator import SchemaValidator

__all__ = [
    "SchemaValidator",
    "collect_field_errors",
    "count_failure",
    "field_path",
    "metric_field",
    "openapi_document",
    "openapi_json",
    "openapi_text",
]
