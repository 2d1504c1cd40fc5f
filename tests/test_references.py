"""The committed references are what the pipeline makes: every study's `figures` target, run in a fresh copy of the
repository from the committed trajectories alone, finishes, writes into results/redrawn/<study> exactly the figures
and tables committed under results/reference/<study>, byte for byte, and leaves every committed file as it was.

Used three ways (the guide's third way of using the package): from the repository root, from a fresh clone, and
with the workflow as a Snakemake module of another workflow in another directory.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest
from test_workflow import copy_workflow, snakemake

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results/reference"
#: The committed studies: those with figures under results/reference/ (main is config/config.yaml alone).
STUDIES = sorted(p.name for p in REFERENCE.iterdir() if (p / "figures").is_dir())


def configfile(study: str) -> str:
    return "config/config.yaml" if study == "main" else f"config/{study}.yaml"


def digests(folder: Path) -> dict[str, str]:
    """``{path relative to folder: sha256}`` of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def drawn(folder: Path) -> dict[str, str]:
    """The digests of a study's figures and tables (what the figures target writes)."""
    return {k: v for k, v in digests(folder).items() if k.startswith(("figures/", "tables/"))}


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh copy of the workflow with every committed reference; (its root, the references' digests)."""
    repo = copy_workflow(tmp_path_factory.mktemp("clone") / "repo")
    for study in [*STUDIES, "scale"]:  # scale_2.6M reads scale's committed predictions
        if not (repo / f"results/reference/{study}").exists():
            shutil.copytree(REFERENCE / study, repo / f"results/reference/{study}")
    return repo, digests(repo / "results/reference")


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_figures_target_redraws_the_committed_reference(clone: tuple[Path, dict[str, str]], study: str) -> None:
    repo, before = clone
    result = snakemake(repo, "figures", "--cores", "2", "--configfile", configfile(study))
    assert result.returncode == 0, result.stdout[-4000:]
    assert digests(repo / "results/reference") == before, "the figures target changed a committed file"
    redrawn, committed = drawn(repo / f"results/redrawn/{study}"), drawn(REFERENCE / study)
    assert sorted(redrawn) == sorted(committed), "the redrawn files are not the committed ones"
    differ = sorted(name for name in committed if redrawn[name] != committed[name])
    assert not differ, f"{study}: redrawn differently from the committed reference: {differ}"


@pytest.mark.slow
def test_a_failing_figures_job_deletes_no_committed_file(tmp_path: Path) -> None:
    """A committed table with its header and no rows fails the jobs; Snakemake's clean-up of their outputs reaches
    only results/redrawn/."""
    repo = copy_workflow(tmp_path / "broken")
    shutil.copytree(REFERENCE / "lr3e-5", repo / "results/reference/lr3e-5")
    table = repo / "results/reference/lr3e-5/trajectories.csv.gz"
    with gzip.open(table, "rt") as f:
        header = f.readline()
    with gzip.open(table, "wt") as f:
        f.write(header)
    before = digests(repo / "results/reference/lr3e-5")
    result = snakemake(repo, "figures", "--cores", "1", "--configfile", "config/lr3e-5.yaml")
    assert result.returncode != 0
    assert digests(repo / "results/reference/lr3e-5") == before


@pytest.mark.slow
def test_figures_target_of_the_workflow_used_as_a_module(tmp_path: Path) -> None:
    """`module ktos` + `use rule * from ktos` in another directory: the committed table is read from this
    repository and the figures land in that directory, equal to the committed ones."""
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / "Snakefile").write_text(
        f'configfile: "{ROOT}/config/config.yaml"\n'
        f'configfile: "{ROOT}/config/lr3e-5.yaml"\n\n\n'
        "module ktos:\n"
        f'    snakefile:\n        "{ROOT}/workflow/Snakefile"\n'
        "    config:\n        config\n\n\n"
        "use rule * from ktos as ktos_*\n"
    )
    result = snakemake(deploy, "ktos_figures", "--cores", "2")
    assert result.returncode == 0, result.stdout[-4000:]
    assert drawn(deploy / "results/redrawn/lr3e-5") == drawn(REFERENCE / "lr3e-5")
