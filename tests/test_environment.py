"""The declared environment: pyproject ranges, the lock, environment.yml and what the package imports agree."""

from __future__ import annotations

import ast
import csv
import gzip
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
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


ENVS = REPO / "workflow/envs"
#: What the analysis environment must not hold: the training stack.
TRAINING_STACK = ("torch", "transformers", "trl", "accelerate", "tokenizers", "peft", "matplotlib")


def conda_env(name: str) -> dict[str, str]:
    """``{canonical name: version}`` of workflow/envs/<name>.yaml's pip pins; checks its conda part."""
    env = yaml.safe_load((ENVS / f"{name}.yaml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"], name
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert conda == ["python=3.11", "pip"], (name, conda)
    return pins(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)))


#: Loads the workflow with Snakemake's API (the default config) and prints {rule: conda env or None} of the rules
#: that run a shell command (a run: block runs in Snakemake's own process; a target runs nothing).
RULE_ENVS = """
import json, pathlib
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(ResourceSettings(), ConfigSettings(), StorageSettings(),
                            snakefile=pathlib.Path("workflow/Snakefile"), workdir=pathlib.Path("."))._workflow
    print(json.dumps({r.name: r.conda_env for r in workflow.rules if r.shellcmd}))
"""


def rule_envs() -> dict[str, str]:
    """``{rule: environment name}`` of the rules that run a command, from the workflow as Snakemake loads it."""
    result = subprocess.run([sys.executable, "-c", RULE_ENVS], cwd=REPO, capture_output=True, text=True, check=True)
    envs = json.loads(result.stdout.splitlines()[-1])
    missing = sorted(rule for rule, env in envs.items() if env is None)
    assert not missing, f"rules without their conda environment: {missing}"
    return {rule: Path(env).stem for rule, env in envs.items()}


def test_workflow_envs_pin_the_locks_versions() -> None:
    """Each rule runs in workflow/envs/train.yaml or analysis.yaml; every pin there is the lock's, and each
    environment has its post-deploy script (test_post_deploy_scripts_install_the_workflows_own_ktos)."""
    locked = lock()
    assert sorted(p.name for p in ENVS.glob("*.yaml")) == ["analysis.yaml", "train.yaml"]
    for name in ("train", "analysis"):
        env = conda_env(name)
        wrong = {pkg: (version, locked.get(pkg)) for pkg, version in env.items() if locked.get(pkg) != version}
        assert not wrong, f"{name}.yaml pins differ from requirements/lock.txt (env, lock): {wrong}"
    envs = rule_envs()
    assert {
        "synth_data",
        "pretrain_base",
        "prepare",
        "split",
        "balance",
        "extract_kl",
        "draw_figures_studies",
        "write_tables_studies",
        "draw_figures_reference",
        "write_tables_reference",
    } <= set(envs)
    assert {rule for rule, env in envs.items() if env == "analysis"} == {
        "answer",
        "extract_kl",
        "write_tables_studies",
        "write_tables_reference",
    }


def test_post_deploy_scripts_install_the_workflows_own_ktos(tmp_path: Path) -> None:
    """Each environment's post-deploy script installs the repository it lies in, without dependencies; a copy
    outside a repository (a module from a remote source) fails, naming the reason."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/usr/bin/env bash\necho "$@" > "$CALLED"\n')
    (fake / "python").chmod(0o755)
    import os

    for name in ("train", "analysis"):
        script = ENVS / f"{name}.post-deploy.sh"
        env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "CALLED": str(tmp_path / name)}
        subprocess.run(["bash", str(script)], env=env, check=True, cwd=tmp_path)
        assert (tmp_path / name).read_text().split() == ["-m", "pip", "install", "--no-deps", str(REPO)]
        elsewhere = tmp_path / "a/b/c.sh"
        elsewhere.parent.mkdir(parents=True, exist_ok=True)
        elsewhere.write_text(script.read_text())
        failed = subprocess.run(["bash", str(elsewhere)], env=env, capture_output=True, text=True)
        assert failed.returncode != 0 and "no ktos source" in failed.stderr


def test_train_env_holds_every_dependency_of_the_package_and_its_workflow_extras() -> None:
    """train.yaml: ktos's dependencies and those of the lora and tracking extras the configs can ask for."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = [Requirement(r) for r in project["dependencies"]]
    needed += [Requirement(r) for extra in ("lora", "tracking") for r in project["optional-dependencies"][extra]]
    missing = {str(r) for r in needed if canonicalize_name(r.name) not in conda_env("train")}
    assert not missing, f"workflow/envs/train.yaml lacks {sorted(missing)}"


def only_env_site(env: dict[str, str], dest: Path) -> Path:
    """A site-packages folder holding (as links to this venv's copies) only ``env``'s distributions and ktos."""
    dest.mkdir()
    for name in [*env, "ktos"]:
        dist = metadata.distribution(name)
        assert name == "ktos" or dist.version == env[name], (name, dist.version)
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
            target = Path(str(dist.locate_file(top)))
            if target.exists() and not (dest / top).exists():
                (dest / top).symlink_to(target)
    return dest


@pytest.mark.slow
def test_analysis_stages_run_with_only_the_analysis_env(tmp_path: Path) -> None:
    """analysis.yaml has no training stack, and its stages run with nothing else installed (python -S: no
    site-packages but a folder of analysis.yaml's distributions): `ktos tables` on the committed reference
    table writes the verdict, and `ktos extract-kl` collects a run directory."""
    import os
    import subprocess

    env = conda_env("analysis")
    assert not set(env) & set(TRAINING_STACK), f"analysis.yaml holds {sorted(set(env) & set(TRAINING_STACK))}"
    site = only_env_site(env, tmp_path / "site")
    python = [sys.executable, "-S", "-m", "ktos"]
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src")]), "MPLBACKEND": "Agg"}
    probe = subprocess.run([sys.executable, "-S", "-c", "import torch"], env=environ, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr, "the folder leaks torch"

    table = REPO / "results/reference/main/trajectories.csv.gz"
    tables = subprocess.run([*python, "tables", "--table", str(table), "--output", str(tmp_path / "tables")],
                            env=environ, capture_output=True, text=True)  # fmt: skip
    assert tables.returncode == 0, tables.stderr[-3000:]
    assert (tmp_path / "tables/verdict.md").stat().st_size > 0

    run = tmp_path / "runs/kto_lr0.001_seed0"
    run.mkdir(parents=True)
    run_info = {"method": "kto", "learning_rate": 1e-3, "seed": 0, "status": "completed", "regime": "main"}
    (run / "run_info.json").write_text(json.dumps(run_info))
    (run / "trajectory.jsonl").write_text(json.dumps({"step": 1, "probe_kl": 0.1, "kl": 0.05}) + "\n")
    extract = subprocess.run([*python, "extract-kl", "--runs", str(run), "--output", str(tmp_path / "t.csv.gz")],
                             env=environ, capture_output=True, text=True)  # fmt: skip
    assert extract.returncode == 0, extract.stderr[-3000:]
    with gzip.open(tmp_path / "t.csv.gz", "rt") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["probe_kl"]) == 0.1 and float(rows[0]["kl"]) == 0.05, rows
    assert rows[0]["method"] == "kto" and rows[0]["step"] == "1"


def test_every_declared_dependency_is_locked_inside_its_range() -> None:
    locked = lock()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is declared in pyproject.toml but not pinned in requirements/lock.txt"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"lock pins {name}=={locked[name]}, outside {req}"
        )
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
    pages = [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        REPO / "config/README.md",
        REPO / "profiles/README.md",
    ]
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
        assert commented or above, (
            f"config/config.yaml sets {key} = {value!r}, not the schema's {defaults[key]!r}, without a comment"
        )


#: The command-line front end: it dispatches to the library, the study and the toy alike.
FRONT_END = frozenset({"ktos.cli", "ktos.__main__"})
#: Lines a module may have ("about 400").
MAX_LINES = 410


def package_modules() -> dict[str, Path]:
    """``{dotted name: path}`` of every module under ``src/ktos`` (packages by their ``__init__``)."""
    out = {}
    for path in sorted((REPO / "src").rglob("*.py")):
        parts = path.relative_to(REPO / "src").with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_modules(name: str, path: Path) -> set[str]:
    """The ktos modules ``name`` imports: ``import``/``from`` statements (relative ones resolved), and
    ``importlib.import_module`` calls, whose computed names are read from the tables that feed them
    (``ktos.cli.STAGES``, ``ktos._EXPORTS``); a computed name anywhere else fails the test."""
    import ktos
    import ktos.cli

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(x for x in (base, node.module) if x)
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # `from . import compat` names a module
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif (
            isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        ):
            arg = node.args[0]
            if isinstance(arg, ast.Constant):
                found.add(arg.value)
            elif name == "ktos.cli":
                found.update(f"ktos.{module}" for module, _, _ in ktos.cli.STAGES.values())
            elif name == "ktos":
                found.update(f"ktos.{module}" for module in ktos._EXPORTS.values())
            else:
                raise AssertionError(f"{name} imports a computed module name: add its table to this test")
    modules = package_modules()
    return {m for m in found if m in modules and m != name}


def test_the_library_imports_nothing_from_the_study_or_the_toy() -> None:
    modules = package_modules()
    graph = {name: imported_modules(name, path) for name, path in modules.items()}
    for name, targets in graph.items():
        if name.startswith(("ktos.study", "ktos.toy")) or name in FRONT_END:
            continue
        wrong = sorted(t for t in targets if t.startswith(("ktos.study", "ktos.toy")))
        assert not wrong, f"the library module {name} imports {wrong}"
    for name, targets in graph.items():
        if name.startswith("ktos.toy"):
            assert not [t for t in targets if t.startswith("ktos.study")], f"the toy module {name} imports the study"
    assert {"ktos.study.report.figures", "ktos.toy.pretrain"} <= graph["ktos.cli"], "importlib calls were not followed"


def test_the_module_graph_has_no_cycles_and_modules_stay_small() -> None:
    modules = package_modules()
    graph = {name: imported_modules(name, path) - {"ktos"} for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for target in graph[name]:
                if not name.startswith(target + "."):  # a module may use its own package's __init__
                    visit(target, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())
    for name, path in modules.items():
        assert len(path.read_text().splitlines()) <= MAX_LINES, f"{name} has grown past about 400 lines"


@pytest.mark.slow
def test_importing_the_whole_library_loads_neither_the_study_nor_the_toy() -> None:
    """At run time, so every import path counts: each library module and every public name, in a fresh process."""
    library = [m for m in package_modules() if not m.startswith(("ktos.study", "ktos.toy")) and m not in FRONT_END]
    code = (
        "import importlib, sys, ktos\n"
        f"for m in {library!r}: importlib.import_module(m)\n"
        "for n in ktos.__all__: getattr(ktos, n)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ktos.study', 'ktos.toy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    assert "ktos.trainer" in library and "ktos.probe" in library


@pytest.mark.slow
def test_ktos_train_runs_nothing_from_the_study() -> None:
    """``ktos train``'s code (its parser and one run, :mod:`ktos.runs`) imports nothing from ``ktos.study`` nor from
    ``ktos.toy``: the command line hands the toy's task accuracy in when it trains (``ktos.toy.quality.TASK``)."""
    code = (
        "import sys, ktos.cli, ktos.runs.command, ktos.runs.run\n"
        "ktos.cli.build_parser()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ktos.study', 'ktos.toy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_librarys_analysis_defaults_are_the_schemas() -> None:
    from ktos.study.readings.analysis import Criteria

    analysis = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())["properties"]["analysis"]
    defaults = {key: spec["default"] for key, spec in analysis["properties"].items()}
    criteria = Criteria()
    fields = ("threshold", "window", "margin", "phase_end", "beta", "search_steps", "arms", "seed_sets", "predictions")
    assert {key: getattr(criteria, key) for key in fields} == {key: defaults[key] for key in fields}
    assert set(defaults) - set(fields) == {"checkpoints", "table"}, "a new analysis key: give Criteria its field"


#: Train keys whose schema default is the workflow's own rather than the library's, and why.
WORKFLOW_OWN_DEFAULTS = {
    "max_steps": "the workflow trains a set number of steps (the library's -1 trains by epochs)",
    "optim": "the schema offers unfused AdamW, as every committed run used, and SGD (the library's is fused AdamW)",
    "bf16": "the workflow asks yes or no (the library's None leaves it to transformers)",
}
#: Train keys of the workflow alone (how a job is launched, what else is passed).
WORKFLOW_KEYS = {"num_processes", "accelerate_config", "extra_args"}


def test_the_schemas_train_defaults_are_the_librarys() -> None:
    """Field by field, config train's defaults are KTOSConfig's and RunArguments' (the study's own choices are
    set in config/config.yaml, each with its reason), but for WORKFLOW_OWN_DEFAULTS."""
    import dataclasses

    from ktos import KTOSConfig
    from ktos.runs.run import RunArguments

    library = {}
    for cls in (KTOSConfig, RunArguments):
        for field in dataclasses.fields(cls):
            factory = field.default_factory
            library[field.name] = field.default if factory is dataclasses.MISSING else factory()
    train = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())["properties"]["train"]
    schema = {key: spec["default"] for key, spec in train["properties"].items()}
    assert set(schema) - set(library) == WORKFLOW_KEYS
    library["report_to"] = [library["report_to"]]  # the one tracker "none", as the schema's list
    differ = {key for key in set(schema) - WORKFLOW_KEYS if schema[key] != library[key]}
    assert differ == set(WORKFLOW_OWN_DEFAULTS), {key: (schema[key], library[key]) for key in differ}
