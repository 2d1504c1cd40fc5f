"""config/README.md's key tables are the rendering of the workflow's JSON schema (ktos.study.plan.config_keys): each
key's default and meaning are written once, in the schema."""

from __future__ import annotations

from pathlib import Path

import yaml

from ktos.study.plan.config_keys import BEGIN, END, key_tables

REPO = Path(__file__).resolve().parents[1]
SCHEMA, EMBEDDED = REPO / "workflow/schemas/config.schema.yaml", REPO / "config/config.yaml"


def test_config_readme_holds_the_schemas_rendering() -> None:
    text = (REPO / "config/README.md").read_text(encoding="utf-8")
    block = text[text.index(BEGIN) : text.index(END) + len(END)] + "\n"
    assert block == key_tables(SCHEMA, EMBEDDED), "config/README.md's keys differ from the schema: re-render them"


def test_every_key_of_the_schema_has_a_row_and_a_changed_default_shows(tmp_path: Path) -> None:
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    rendered = key_tables(SCHEMA, EMBEDDED)
    for section, spec in schema["properties"].items():
        keys = [f"{section}.{k}" for k in spec.get("properties", {})] if section in ("train", "analysis") else []
        for key in keys:
            assert f"| `{key}` |" in rendered, key
    assert "| `train.kl_probe_steps` | `1` | `5` |" in rendered  # the library's 1, the embedded default's 5
    schema["properties"]["train"]["properties"]["kl_probe_steps"]["default"] = 7
    changed = tmp_path / "schema.yaml"
    changed.write_text(yaml.safe_dump(schema), encoding="utf-8")
    assert "| `train.kl_probe_steps` | `7` | `5` |" in key_tables(changed, EMBEDDED)
