#!/usr/bin/env python3
"""Generate docs/api.md from datastorage/openapi.yaml and docs/configuration.md from the
settings table of datastorage/config.py, so the reference pages cannot drift from the code.

    python hack/gen_docs.py          # rewrite both files
    python hack/gen_docs.py --check  # exit 1 naming each stale file (the tests run this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datastorage.config import SETTINGS  # noqa: E402

OPENAPI = REPO / "datastorage" / "openapi.yaml"
API_DOC = REPO / "docs" / "api.md"
CONFIG_DOC = REPO / "docs" / "configuration.md"
METHODS = ("get", "post", "put", "patch", "delete")
CONSTRAINTS = (
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("minimum", "min"),
    ("maximum", "max"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
    ("maxProperties", "max properties"),
    ("pattern", "pattern"),
    ("format", "format"),
    ("default", "default"),
)


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _anchor(name: str) -> str:
    return name.lower()


def type_of(schema: dict[str, Any]) -> str:
    """A short Markdown rendering of a schema's type (links for references)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(type_of(s) for s in schema[key])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and "items" in schema:
        return f"array of {type_of(schema['items'])}"
    return kind


def constraints(schema: dict[str, Any]) -> str:
    parts = [f"{label} `{schema[key]}`" for key, label in CONSTRAINTS if key in schema]
    if schema.get("description"):
        parts.insert(0, schema["description"].strip())
    return _cell("; ".join(parts))


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method} {path}`", ""]
    for key in ("summary", "description"):
        if op.get(key):
            lines += [op[key].strip(), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_cell(type_of(schema))} | "
                f"{'yes' if p.get('required') else 'no'} | "
                f"{constraints({**schema, 'description': p.get('description', '')})} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            required = "required" if body.get("required") else "optional"
            schema = type_of(content.get("schema", {}))
            lines += [f"Request body ({required}, `{media}`): {schema}", ""]
    lines += ["| status | meaning | body |", "|---|---|---|"]
    for status, response in op.get("responses", {}).items():
        if "$ref" in response:
            lines.append(f"| {status} | {type_of(response)} | |")
            continue
        bodies = ", ".join(
            f"{type_of(c.get('schema', {}))} (`{media}`)"
            for media, c in response.get("content", {}).items()
        )
        lines.append(f"| {status} | {_cell(response.get('description', ''))} | {bodies} |")
    return lines + [""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    properties = schema.get("properties")
    if not properties:
        lines += [f"Type: {type_of(schema)}. {constraints({**schema, 'description': ''})}", ""]
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | notes |", "|---|---|---|---|"]
    for field, sub in properties.items():
        lines.append(
            f"| `{field}` | {_cell(type_of(sub))} | {'yes' if field in required else 'no'} | "
            f"{constraints(sub)} |"
        )
    if schema.get("additionalProperties") is False:
        lines += ["", "Other fields are rejected."]
    return lines + [""]


def api_markdown(spec: dict[str, Any]) -> str:
    info = spec["info"]
    lines = [
        f"# {info['title']} API reference (version {info['version']})",
        "",
        "Generated from `datastorage/openapi.yaml` by `hack/gen_docs.py`; do not edit by hand.",
        "The running server also serves the document itself at `/openapi.yaml`.",
        "",
        info.get("description", "").strip(),
        "",
        "## Endpoints",
        "",
        "| method | path | summary |",
        "|---|---|---|",
    ]
    operations = _operations(spec)
    for method, path, op in operations:
        lines.append(f"| {method} | `{path}` | {_cell(op.get('summary', ''))} |")
    lines.append("")
    for method, path, op in operations:
        lines += _operation(method, path, op)
    lines += ["## Schemas", ""]
    for name, schema in spec["components"]["schemas"].items():
        lines += _schema(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def configuration_markdown() -> str:
    lines = [
        "# Configuration",
        "",
        "Generated from the settings table of `datastorage/config.py` by `hack/gen_docs.py`;",
        "do not edit by hand.",
        "",
        "Every setting is an environment variable. The same settings may also come from a YAML",
        "file given with `--config FILE` or `DATASTORAGE_CONFIG`, keyed by the field name in",
        "the second column (environment variables win over the file). A bad or missing value",
        "stops the command with one line naming the setting and exit code 2.",
        "",
        "| environment variable | YAML key | default | meaning |",
        "|---|---|---|---|",
    ]
    for setting in SETTINGS:
        default = setting.default
        if default is None or default == ():
            shown = "unset"
        elif isinstance(default, bool):
            shown = f"`{str(default).lower()}`"
        elif setting.field == "workers":
            shown = "number of CPUs"
        else:
            shown = f"`{default}`"
        lines.append(f"| `{setting.env}` | `{setting.field}` | {shown} | {_cell(setting.help)} |")
    return "\n".join(lines) + "\n"


def generated() -> dict[Path, str]:
    spec = yaml.safe_load(OPENAPI.read_text())
    return {API_DOC: api_markdown(spec), CONFIG_DOC: configuration_markdown()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args()
    stale = []
    for path, text in generated().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.relative_to(REPO))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    for path in stale:
        print(f"{path} is stale: run `python hack/gen_docs.py`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
