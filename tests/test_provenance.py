"""What ``run_info.json`` says about where a run came from: ktos's own revision (not the repository the user
runs it in) and the machine (device, precision, world size)."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ktos
from ktos import provenance
from ktos.provenance import git_revision, ktos_revision, machine_info, precision

PACKAGE = Path(ktos.__file__).resolve().parent


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def users_repo(tmp_path: Path) -> Path:
    """A user's own git repository, with a commit."""
    repo = tmp_path / "users-project"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('hi')\n")
    git(repo, "add", "train.py")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@example.com", "commit", "-q", "-m", "user's commit")
    return repo


def test_the_revision_is_ktoss_own_whatever_the_working_directory(users_repo, monkeypatch) -> None:
    if git_revision(PACKAGE) is None:
        pytest.skip("ktos is not running from a git checkout here")
    monkeypatch.chdir(users_repo)
    package_head = git(PACKAGE, "rev-parse", "HEAD")
    assert ktos_revision().split("+")[0] == package_head != git(users_repo, "rev-parse", "HEAD")


def test_an_installed_copy_inside_someone_elses_repository_reports_its_version(users_repo, monkeypatch) -> None:
    # ktos installed into a virtual environment inside the user's repository (ignored, as a venv is): git finds
    # the user's repository there, whose commit is not ktos's revision.
    (users_repo / ".gitignore").write_text(".venv/\n")
    installed = users_repo / ".venv" / "lib" / "site-packages" / "ktos"
    shutil.copytree(PACKAGE, installed, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(users_repo)
    assert git_revision(installed) is None
    assert ktos_revision(installed) == f"ktos=={metadata.version('ktos')}"


def test_outside_any_checkout_the_installed_version_is_the_revision(tmp_path, monkeypatch) -> None:
    copy = tmp_path / "site-packages" / "ktos"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above tmp_path is searched
    assert git_revision(copy) is None and ktos_revision(copy) == f"ktos=={metadata.version('ktos')}"

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(provenance.metadata, "version", not_installed)
    assert ktos_revision(copy) == "ktos==unknown"


def fake_args(device: str, **flags: bool) -> SimpleNamespace:
    return SimpleNamespace(device=torch.device(device), bf16=flags.get("bf16", False), fp16=flags.get("fp16", False))


def test_precision_names_the_arithmetic(monkeypatch) -> None:
    assert precision(fake_args("cpu")) == "fp32"
    assert precision(fake_args("cpu", bf16=True)) == "bf16"
    assert precision(fake_args("cuda", fp16=True)) == "fp16"
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")  # TF32 matmuls allowed
    assert precision(fake_args("cuda")) == "tf32"
    assert precision(fake_args("cpu")) == "fp32"  # TF32 is a CUDA matter
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
    assert precision(fake_args("cuda")) == "fp32"


def test_machine_info_names_the_device(monkeypatch) -> None:
    cpu = machine_info(fake_args("cpu"), world_size=1, model=torch.nn.Linear(2, 2))
    assert cpu["device"] == "cpu" and cpu["device_count"] >= 1 and cpu["device_name"]
    assert (cpu["world_size"], cpu["precision"], cpu["weights_dtype"]) == (1, "fp32", "float32")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    gpu = machine_info(fake_args("cuda:0", bf16=True), world_size=4, model=torch.nn.Linear(2, 2).to(torch.bfloat16))
    expected = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "device_count": 4, "world_size": 4,
                "precision": "bf16", "weights_dtype": "bfloat16"}  # fmt: skip
    assert gpu == expected


@pytest.mark.slow
def test_a_runs_run_info_names_the_machine_and_ktoss_revision(tiny_model_dir, tmp_path) -> None:
    from conftest import feedback_rows

    from ktos.cli import main

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in feedback_rows(16, 8)))
    run_dir = tmp_path / "run"
    assert main(["train", "--model_name_or_path", str(tiny_model_dir), "--train_data", str(train), "--output_dir",
                 str(run_dir), "--per_device_train_batch_size", "4", "--max_length", "32", "--max_steps", "1",
                 "--gradient_checkpointing", "false", "--save_strategy", "no", "--save_model", "false",
                 "--disable_tqdm", "true"]) == 0  # fmt: skip
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["machine"] == {"device": "cpu", "device_name": info["machine"]["device_name"],
                               "device_count": info["machine"]["device_count"], "world_size": 1, "precision": "fp32",
                               "weights_dtype": "float32"}  # fmt: skip
    assert info["ktos_revision"] == ktos_revision() and info["git_revision"] == git_revision()
