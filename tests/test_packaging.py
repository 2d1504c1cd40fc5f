"""What a user installs and a citing author reads: ranges that admit a known-good stack, minimum pins that
equal the floors, the licence, the citation file and one version everywhere."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import ktos

REPO = Path(__file__).resolve().parents[1]

#: A GPU stack the package trained, probed and reproduced the reference pipeline on (pyproject.toml's torch
#: comment): ``pip install ktos`` there must upgrade none of these.
KNOWN_GOOD_STACK = {
    "torch": "2.11.0+cu130",
    "transformers": "5.17.0",
    "datasets": "5.2.0",
    "accelerate": "1.15.0",
    "pandas": "3.0.6",
    "pyarrow": "25.0.1",
}
KNOWN_GOOD_PYTHON = "3.12.3"


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirements(*, extras: bool) -> list[Requirement]:
    proj = project()
    reqs = [Requirement(r) for r in proj["dependencies"]]
    if extras:
        reqs += [Requirement(r) for extra in proj["optional-dependencies"].values() for r in extra]
    return [r for r in reqs if canonicalize_name(r.name) != "ktos"]


def floor(req: Requirement) -> Version:
    """The lowest version ``req`` allows: its ``>=`` (or ``==``) bound; a requirement without one has no floor."""
    bounds = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert len(bounds) == 1, f"{req}: expected exactly one lower bound"
    return bounds[0]


def minimum_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements/minimum.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_the_known_good_stack_satisfies_every_specifier() -> None:
    proj = project()
    python = Version(KNOWN_GOOD_PYTHON)
    assert proj["requires-python"] and Requirement(f"python{proj['requires-python']}").specifier.contains(python)
    env = {"python_version": f"{python.major}.{python.minor}", "python_full_version": str(python), "extra": ""}
    checked = set()
    for req in requirements(extras=True):
        name = canonicalize_name(req.name)
        if name not in KNOWN_GOOD_STACK or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        version = KNOWN_GOOD_STACK[name]
        assert req.specifier.contains(version, prereleases=True), f"pyproject's {req} refuses {name} {version}"
        checked.add(name)
    assert checked == set(KNOWN_GOOD_STACK), f"not declared in pyproject.toml: {set(KNOWN_GOOD_STACK) - checked}"


def test_minimum_pins_are_the_floors() -> None:
    pins = minimum_pins()
    study = [Requirement(r) for r in project()["optional-dependencies"]["study"]]  # CI's minimum job installs it
    declared = {canonicalize_name(r.name): r for r in [*requirements(extras=False), *study]}
    assert set(pins) <= set(declared), f"pinned in minimum.txt but not a dependency: {set(pins) - set(declared)}"
    # torch stays at the lock's version in the minimum job (its floor comes from a GPU run, pyproject says).
    assert set(declared) - set(pins) == {"torch"}, (
        f"dependencies without a minimum pin: {set(declared) - set(pins) - {'torch'}}"
    )
    for name, pin in pins.items():
        req = declared[name]
        assert Version(pin) == floor(req), f"requirements/minimum.txt pins {name}=={pin}, pyproject's floor is {req}"
        assert req.specifier.contains(pin, prereleases=True), f"{name}=={pin} is outside {req}"


def test_license_and_citation_match_the_metadata() -> None:
    proj = project()
    assert proj["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    for phrase in (
        "Apache License",
        "Version 2.0, January 2004",
        "TERMS AND CONDITIONS FOR USE",
        "END OF TERMS AND CONDITIONS",
    ):
        assert phrase in text, f"LICENSE is not the Apache License 2.0 text (no {phrase!r})"
    assert "LICENSE" in proj["license-files"]
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert str(cff["version"]) == proj["version"], "CITATION.cff's version is not pyproject.toml's"
    assert cff["license"] == proj["license"]
    assert cff["title"] and cff["authors"]


def test_changelog_has_an_entry_for_this_version() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert f"## [{project()['version']}] - " in text, "CHANGELOG.md has no entry for pyproject.toml's version"


def test_classifiers_name_the_supported_pythons() -> None:
    proj = project()
    allowed = Requirement(f"python{proj['requires-python']}").specifier
    named = {
        c.rsplit(" :: ", 1)[-1] for c in proj["classifiers"] if c.startswith("Programming Language :: Python :: 3.")
    }
    assert {"3.11", "3.12"} <= named
    assert all(allowed.contains(f"{v}.0") for v in named), f"a classifier names a Python outside {allowed}"


def test_version_comes_from_the_package_metadata() -> None:
    assert ktos.__version__ == metadata.version("ktos")
    assert ktos.__version__ == project()["version"], "installed metadata is stale: reinstall (pip install -e .)"


def test_the_library_needs_none_of_the_studys_plotting_and_statistics() -> None:
    # What `pip install ktos` pulls is what the library imports; matplotlib, seaborn and scipy come with [study].
    required = {canonicalize_name(r.name) for r in requirements(extras=False)}
    assert {"torch", "transformers", "trl", "datasets", "accelerate"} <= required
    assert not required & {"matplotlib", "seaborn", "scipy", "snakemake"}
    assert {"matplotlib", "seaborn", "scipy"} <= {canonicalize_name(Requirement(r).name) for r in project()[
        "optional-dependencies"]["study"]}  # fmt: skip


@pytest.mark.slow
def test_import_ktos_and_a_short_training_need_no_study_package(tmp_path) -> None:
    script = Path(__file__).with_name("library_only.py")  # CI runs it in a venv without the study's packages too
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "2 []"
