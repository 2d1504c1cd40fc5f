"""`ktos train` end to end on a tiny model: flags and YAML, run directory contents, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import feedback_rows
from ktos.cli import main
from ktos.trajectories import read_trajectory

pytestmark = pytest.mark.slow


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def data_files(tmp_path: Path) -> tuple[Path, Path]:
    train = write_jsonl(tmp_path / "train.jsonl", [{**r, "label": int(r["label"])} for r in feedback_rows(40, 30)])
    held = write_jsonl(tmp_path / "eval.jsonl", feedback_rows(16, 8, seed=1))
    return train, held


def base_flags(model_dir: Path, train: Path, held: Path, run_dir: Path) -> list[str]:
    return [
        "train", "--model_name_or_path", str(model_dir), "--train_data", str(train), "--eval_data", str(held),
        "--output_dir", str(run_dir), "--per_device_train_batch_size", "4", "--max_length", "32",
        "--gradient_checkpointing", "false", "--kl_probe_size", "16", "--disable_tqdm", "true",
    ]


def test_train_from_yaml_and_flags_writes_run_dir(tiny_model_dir, data_files, tmp_path) -> None:
    train, held = data_files
    run_dir = tmp_path / "run"
    config = tmp_path / "train.yaml"
    config.write_text("use_kto_s: false\nbeta: 0.3\nmax_steps: 5\nlearning_rate: 0.001\nsave_strategy: 'no'\n")
    flags = base_flags(tiny_model_dir, train, held, run_dir) + ["--config", str(config), "--max_steps", "3"]
    assert main(flags) == 0
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["method"] == "kto" and info["beta"] == 0.3 and info["status"] == "completed"
    assert info["config"]["max_steps"] == 3  # the flag won over the YAML file
    assert info["config"]["use_cpu"] is True and info["config"]["bf16"] is False
    assert info["versions"]["trl"] == "1.5.1" and "git_revision" in info and info["seed"] == 42
    assert info["quality"]["metric"] == "preference_accuracy" and 0 <= info["quality"]["value"] <= 1
    rows = read_trajectory(run_dir / "trajectory.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["probe_kl"]) and math.isfinite(r["probe_kl_per_token"]) for r in rows)
    assert rows[0]["learning_rate"] > 0 and all(math.isfinite(r["kl"]) for r in rows)


def test_rerun_resumes_from_last_checkpoint(tiny_model_dir, data_files, tmp_path) -> None:
    train, held = data_files
    run_dir = tmp_path / "run"
    flags = base_flags(tiny_model_dir, train, held, run_dir) + ["--save_steps", "2", "--learning_rate", "1e-3"]
    assert main(flags + ["--max_steps", "2", "--keep_checkpoints", "true"]) == 0
    assert (run_dir / "checkpoint-2" / "trajectory.jsonl").is_file()
    (run_dir / "trajectory.jsonl").unlink()  # as Snakemake does to the outputs of an incomplete job
    (run_dir / "checkpoint-3").mkdir()  # a checkpoint cut off mid-save is skipped
    assert main(flags + ["--max_steps", "4"]) == 0
    assert not list(run_dir.glob("checkpoint-*"))  # removed once the run completed
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-2") and info["status"] == "completed"
    assert [r["step"] for r in read_trajectory(run_dir / "trajectory.jsonl")] == [1, 2, 3, 4]


def test_bad_labels_exit_2_with_one_line(tiny_model_dir, tmp_path, capsys) -> None:
    rows = feedback_rows(8, 4)
    rows[3]["label"] = 2
    train = write_jsonl(tmp_path / "bad.jsonl", rows)
    code = main(["train", "--model_name_or_path", str(tiny_model_dir), "--train_data", str(train),
                 "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "label" in err and "3" in err
