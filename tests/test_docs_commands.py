"""Every command the README and docs/pipeline.md show in a ``bash`` block runs as written, in a fresh copy of the
workflow: the install lines name extras and files that exist, the training commands dry-run (``-n``: training them
takes minutes to hours), and the commands that are quick run for real (the figures target, the ``.test`` config,
both report commands).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import feedback_rows
from test_workflow import copy_workflow, snakemake

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/pipeline.md")


def commands(doc: str) -> list[str]:
    """The commands of ``doc``'s ``bash`` blocks, one per line, without their comments."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_the_install_lines_name_what_exists() -> None:
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    install = [part for doc in DOCS for c in commands(doc) for part in c.split("&&") if "pip install" in part]
    assert len(install) >= 3, install
    for line in install:
        words = shlex.split(line)
        if "-c" in words:
            assert (ROOT / words[words.index("-c") + 1]).is_file(), line
        for target in (w for w in words if w.startswith(".")):
            named = set(re.findall(r"\[(.*)\]", target)[0].split(",")) if "[" in target else set()
            assert named <= extras, f"{line}: no extra {named - extras} in pyproject.toml"


@pytest.mark.slow
def test_every_snakemake_command_of_the_docs_runs(tmp_path: Path) -> None:
    repo = copy_workflow(tmp_path / "repo")
    for study in ("main", "scale"):
        shutil.copytree(ROOT / f"results/reference/{study}", repo / f"results/reference/{study}", dirs_exist_ok=True)
    # config/paper.yaml reads a local copy of a real dataset: a few rows of it stand there (the dry run checks it)
    source = yaml.safe_load((ROOT / "config/paper.yaml").read_text())["data"]["source"]
    (repo / source).parent.mkdir(parents=True, exist_ok=True)
    (repo / source).write_text("".join(json.dumps(row) + "\n" for row in feedback_rows(16, 8)))
    lines = [part.strip() for doc in DOCS for c in commands(doc) for part in c.split("&&") if "snakemake" in part]
    assert len(lines) >= 15, lines
    ran = set()
    for line in sorted(set(lines), key=lambda c: "--report" in c):  # the reports after what they report on
        args = shlex.split(line)[1:]
        quick = "figures" in args or ".test/config/config.yaml" in args
        if "--report" in args and "figures" not in args:
            args += ["--configfile", ".test/config/config.yaml"]  # a finished study's report: the .test study's
        elif not quick and "--report" not in args:
            args += ["-n"]
        result = snakemake(repo, *args)
        assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}"
        ran.add(line)
    assert (repo / "report.html").stat().st_size > 0
    assert (repo / "results/redrawn/main/figures/fig2_kto_kl.png").exists()
    assert len(ran) == len(set(lines))
