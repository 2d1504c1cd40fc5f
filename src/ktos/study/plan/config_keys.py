"""The configuration keys' reference, rendered from the workflow's JSON schema (``config/README.md``'s key tables).

Each key's default and meaning live once, in ``workflow/schemas/config.schema.yaml``; :func:`key_tables` renders
them as Markdown tables, one per top-level section (the top-level scalars first, as "Study design"), with the
value the embedded default (``config/config.yaml``) sets where it differs. ``tests/test_config_docs.py`` checks that
``config/README.md`` holds exactly this rendering, between :data:`BEGIN` and :data:`END`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

#: Where the rendered tables sit in config/README.md.
BEGIN, END = (
    "<!-- keys: generated from workflow/schemas/config.schema.yaml; do not edit by hand -->",
    "<!-- keys: end -->",
)
#: The sections whose keys form one table each, in order (every other top-level key is a study-design key).
SECTIONS = ("data", "synthetic", "model", "balance", "train", "resources", "analysis")


def _value(value: Any) -> str:
    """A default as YAML flow text in backticks (``required`` without one)."""
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def _rows(prefix: str, spec: dict[str, Any], defs: dict[str, Any], embedded: Any) -> list[str]:
    """One table row per property of ``spec`` (an object's own keys in one row), named ``prefix + name``."""
    rows = []
    for name, prop in spec.get("properties", {}).items():
        key = f"{prefix}{name}"
        ref = prop.get("$ref", "").rpartition("/")[2]
        described = {**defs.get(ref, {}), **prop}
        mine = embedded.get(name) if isinstance(embedded, dict) else None
        if "properties" in described and not described.get("default"):  # its keys' defaults, and those it requires
            subs = described["properties"]
            default = _value({k: v["default"] for k, v in subs.items() if "default" in v})
            default += "".join(f", `{k}` required" for k in described.get("required", []))
            described = {**described, "default": {k: v["default"] for k, v in subs.items() if "default" in v}}
        else:
            default = _value(described["default"]) if "default" in described else "required"
        differs = _value(mine) if mine is not None and mine != described.get("default") else ""
        meaning = " ".join(str(described.get("description", "")).split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {default} | {differs} | {meaning} |")
    return rows


def key_tables(schema_path: str | Path, embedded_path: str | Path) -> str:
    """The Markdown key tables of the schema at ``schema_path`` (with the values ``embedded_path`` sets where they
    differ from the schema's defaults), between :data:`BEGIN` and :data:`END`."""
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    embedded = yaml.safe_load(Path(embedded_path).read_text(encoding="utf-8")) or {}
    defs, props = schema.get("$defs", {}), schema["properties"]
    head = ["| Key | Default | `config/config.yaml` | Meaning |", "|-----|---------|------|---------|"]
    top = {"properties": {k: v for k, v in props.items() if k not in SECTIONS}}
    out = [BEGIN, "", "### Study design", "", *head, *_rows("", top, defs, embedded)]
    for section in SECTIONS:
        out += ["", f"### `{section}`", "", *head, *_rows(f"{section}.", props[section], defs, embedded.get(section))]
    return "\n".join([*out, "", END]) + "\n"
