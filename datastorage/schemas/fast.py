"""The native yes/no check (jsonschema-rs) that spares a valid body the full Python validator.

It is compiled from the same schema as the full validator and only decides whether that one
must run. The two agree on every format value tried except a leap second (`23:59:60`), which
the fast check accepts; the handlers parse every timestamp they use and report such a value as
a field error themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema_rs

from datastorage.schemas.document import inline_refs


def fast_validator(schema: Mapping[str, Any], document: Mapping[str, Any]) -> Any:
    return jsonschema_rs.validator_for(inline_refs(schema, document), validate_formats=True)
