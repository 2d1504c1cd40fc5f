"""The declared environment: pyproject ranges, the lock, environment.yml and what the package imports agree."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def pins(lines: list[str]) -> dict[str, str]:
    """``{canonical name: version}`` of ``name==version`` lines (comments and blanks skipped)."""
    out = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[canonicalize_name(name)] = version
    return out


def lock() -> dict[str, str]:
    return pins((REPO / "requirements/lock.txt").read_text().splitlines())


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    return [r for r in reqs if canonicalize_name(r.name) != "ktos"]


def test_environment_yml_pins_exactly_the_lock() -> None:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == lock()
    assert "python=3.11" in env["dependencies"]


def test_every_declared_dependency_is_locked_inside_its_range() -> None:
    locked = lock()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is declared in pyproject.toml but not pinned in requirements/lock.txt"
        assert req.specifier.contains(locked[name], prereleases=True), f"lock pins {name}=={locked[name]}, outside {req}"
    assert locked["torch"] == "2.13.0"


def test_every_import_of_the_package_is_declared() -> None:
    imported: set[str] = set()
    for path in (REPO / "src/ktos").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"ktos"}
    distributions = metadata.packages_distributions()
    names = {canonicalize_name(r.name) for r in declared()}
    undeclared = {m for m in third_party if not names & {canonicalize_name(d) for d in distributions.get(m, [m])}}
    assert not undeclared, f"imported by src/ktos but not declared in pyproject.toml: {sorted(undeclared)}"


def test_documentation_links_resolve_inside_the_repository() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "config/README.md", REPO / "profiles/README.md"]
    for page in pages:
        text = page.read_text()
        assert "../shared" not in text, page
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(REPO) and path.exists(), f"{page.name}: broken link {target}"


def test_no_docstring_cites_a_document_the_repository_lacks() -> None:
    for path in [*(REPO / "src/ktos").glob("*.py"), *(REPO / "workflow").rglob("*.smk"), REPO / "workflow/Snakefile"]:
        text = path.read_text()
        for phrase in ("ERRATA", "../shared", "interface spec", "the plan note's own"):
            assert phrase not in text, f"{path.relative_to(REPO)} cites {phrase!r}"


def _schema_defaults(schema: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, spec in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if "default" in spec:
            out[path] = spec["default"]
        if spec.get("type") == "object" and "properties" in spec:
            out.update(_schema_defaults(spec, f"{path}."))
    return out


def _flatten(config: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value and f"{prefix}{key}" not in ("headline",):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_config_yaml_equals_the_schema_defaults_or_says_why() -> None:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    defaults = _schema_defaults(schema)
    text = (REPO / "config/config.yaml").read_text()
    lines = text.splitlines()
    for key, value in _flatten(yaml.safe_load(text)).items():
        if key not in defaults or defaults[key] == value:
            continue
        leaf = key.rsplit(".", 1)[-1]
        setting = [ln for ln in lines if re.match(rf"\s*{re.escape(leaf)}:", ln)]
        commented = [ln for ln in setting if "#" in ln]
        block = [i for i, ln in enumerate(lines) if re.match(rf"\s*{re.escape(leaf)}:", ln)]
        above = any(lines[i - 1].strip().startswith("#") for i in block if i > 0)
        assert commented or above, f"config/config.yaml sets {key} = {value!r}, not the schema's {defaults[key]!r}, without a comment"


#: The package's floors: a module imports only from floors below its own (README, "Layout").
FLOORS: dict[str, int] = {
    **dict.fromkeys(("losses", "sources", "runnames", "provenance", "stats", "models", "compat", "update_norm"), 0),
    **dict.fromkeys(("data", "rundir", "probe", "trends", "frontier", "scale", "figure_style"), 1),
    **dict.fromkeys(("balance", "toy", "analysis", "quality", "trainer", "trajectory", "readings_figures"), 2),
    **dict.fromkeys(("verdict", "figures", "run", "pretrain"), 3),
    "cli": 4,
    "__main__": 5,
}


def test_modules_import_only_from_lower_floors_and_stay_small() -> None:
    modules = {p.stem: p for p in (REPO / "src/ktos").glob("*.py") if p.stem != "__init__"}
    assert set(modules) == set(FLOORS), "a module was added or removed: place it on a floor"
    for name, path in modules.items():
        source = path.read_text()
        assert len(source.splitlines()) <= 450, f"{name}.py has grown past about 450 lines"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("ktos")):
                targets = [node.module.split(".")[-1]] if node.module and node.module != "ktos" else [a.name for a in node.names]
                for target in targets:
                    assert FLOORS[target] < FLOORS[name], f"ktos.{name} (floor {FLOORS[name]}) imports ktos.{target} (floor {FLOORS[target]})"


def test_the_librarys_analysis_defaults_are_the_schemas() -> None:
    from ktos.analysis import Criteria

    analysis = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())["properties"]["analysis"]
    defaults = {key: spec["default"] for key, spec in analysis["properties"].items()}
    criteria = Criteria()
    assert (criteria.threshold, criteria.window, criteria.margin, criteria.phase_end) == (
        defaults["threshold"], defaults["window"], defaults["margin"], defaults["phase_end"]
    )
