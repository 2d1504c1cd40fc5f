"""`ktos train` at its edges: a finished run dir is left alone, divergence exits 3, bad weights, an uncached hub id
and unknown keys are one-line errors, truncation is counted, and a run is quiet (one ProbeCallback, one bar)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from conftest import feedback_rows, make_trainer
from datasets import Dataset

from ktos import KTOSTrainer
from ktos.cli import main
from ktos.models import load_model_and_tokenizer
from ktos.runs.command import parse_train_args
from ktos.runs.files import read_trajectory


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def data_files(tmp_path: Path) -> tuple[Path, Path]:
    train = write_jsonl(tmp_path / "train.jsonl", feedback_rows(24, 12))
    held = write_jsonl(tmp_path / "eval.jsonl", feedback_rows(8, 4, seed=1))
    return train, held


def flags(model_dir: Path, train: Path, held: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "train", "--model_name_or_path", str(model_dir), "--train_data", str(train), "--eval_data", str(held),
        "--output_dir", str(run_dir), "--per_device_train_batch_size", "4", "--max_length", "32",
        "--gradient_checkpointing", "false", "--kl_probe_size", "8", "--learning_rate", "1e-3", "--report_to", "none",
        "--disable_tqdm", "true", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_a_finished_run_dir_is_left_alone_unless_overwrite(tiny_model_dir, data_files, tmp_path, capfd) -> None:
    train, held = data_files
    run_dir = tmp_path / "run"
    argv = flags(tiny_model_dir, train, held, run_dir, "--max_steps", "3", "--save_steps", "3")
    assert main(argv) == 0
    assert (run_dir / "checkpoint-3").is_dir()
    trajectory = (run_dir / "trajectory.jsonl").read_text()
    info = (run_dir / "run_info.json").read_text()
    capfd.readouterr()
    assert main(argv) == 0  # a rerun trains no 4th step and appends nothing
    assert (run_dir / "trajectory.jsonl").read_text() == trajectory and (run_dir / "run_info.json").read_text() == info
    left = [line for line in capfd.readouterr().err.splitlines() if "left alone" in line]
    assert len(left) == 1 and "--overwrite" in left[0]
    assert main([*argv, "--save_strategy", "no", "--overwrite", "true"]) == 0  # fresh: no resume, no checkpoint
    assert not list(run_dir.glob("checkpoint-*"))
    assert [r["step"] for r in read_trajectory(run_dir / "trajectory.jsonl")] == [1, 2, 3]
    assert json.loads((run_dir / "run_info.json").read_text())["resumed_from"] is None


@pytest.fixture
def nan_from_step_2(monkeypatch):
    """Every loss NaN from the second loss call on: the weights turn NaN, and the next logged kl with them."""
    original = KTOSTrainer.kto_loss

    def kto_loss(self, *logps):
        losses, *rest = original(self, *logps)
        return (losses * math.nan if self.loss_calls >= 2 else losses, *rest)

    monkeypatch.setattr(KTOSTrainer, "kto_loss", kto_loss)


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "code"), [([], 3), (["--allow_divergence", "true"], 0)])
def test_a_diverged_run_exits_3_unless_divergence_is_allowed(
    tiny_model_dir, data_files, tmp_path, nan_from_step_2, extra, code
) -> None:
    train, held = data_files
    run_dir = tmp_path / "run"
    argv = flags(tiny_model_dir, train, held, run_dir, "--max_steps", "6", "--save_strategy", "no", *extra)
    assert main(argv) == code
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "diverged" and info["diverged_at_step"] < 6


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_class_weights_that_cannot_train_are_refused_by_the_cli(tmp_path, capsys, value) -> None:
    argv = ["train", "--model_name_or_path", "m", "--train_data", "d", "--output_dir", str(tmp_path)]
    assert main([*argv, "--undesirable_weight", value]) == 2
    assert "undesirable_weight must be finite and > 0" in capsys.readouterr().err


def test_an_uncached_hub_id_offline_says_so(tmp_path, data_files, capsys) -> None:
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"):
        load_model_and_tokenizer("nobody/not-a-model")
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_model_and_tokenizer(str(tmp_path / "missing" / "model"))
    train, held = data_files
    assert main(flags(Path("nobody/not-a-model"), train, held, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE is set" in err and "model directory not found" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("yaml_text", "extra", "message"),
    [
        ("learning_rat: 0.1\n", [], "unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
        ("beta: 0.2\n", ["--learnig_rate", "0.1"], "unknown key '--learnig_rate' (did you mean '--learning_rate'?)"),
        ("beta: 0.2\n", ["--learning_rat", "0.1"], "unknown key '--learning_rat' (did you mean '--learning_rate'?)"),
    ],
    ids=["yaml", "flag", "abbreviation"],
)
def test_unknown_keys_exit_2_with_the_nearest_valid_name(tmp_path, capsys, yaml_text, extra, message) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(yaml_text)
    argv = ["--model_name_or_path", "m", "--train_data", "d", "--output_dir", str(tmp_path), "--config", str(config)]
    with pytest.raises(SystemExit) as refused:
        parse_train_args(argv + extra)
    assert refused.value.code == 2 and str(refused.value) == f"ktos train: error: {message}"
    assert main(["train", *argv, *extra]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"ktos train: error: {message}"


def test_truncated_examples_are_counted_in_one_warning(tiny_model_dir, tmp_path, caplog) -> None:
    rows = feedback_rows(16, 8)
    rows[3] = {**rows[3], "prompt": "Q: " + "1+" * 40 + "1="}
    rows[9] = {**rows[9], "completion": " " + "9" * 60}
    caplog.set_level(logging.WARNING)
    trainer = make_trainer(tiny_model_dir, tmp_path, Dataset.from_list(rows), kl_probe_size=0)
    warned = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert trainer.truncated == 2 and len(warned) == 1  # TRL 1.16 drops the long prompt, and it is counted too
    assert warned[0].startswith("2 of 16 training examples were truncated to max_length=32 tokens (prompt + completion")


@pytest.mark.slow
def test_a_run_is_quiet_one_probe_callback_and_one_bar(
    tiny_model_dir, data_files, tmp_path, capfd, monkeypatch
) -> None:
    # Step quality rides on the trainer's own ProbeCallback (no "there is already one" warning from transformers);
    # the bar's postfix shows loss, kl and probe KL instead of one logged dict per step.
    import transformers.trainer_callback

    warned: list[str] = []
    logger = transformers.trainer_callback.logger
    monkeypatch.setattr(logger, "warning", lambda msg, *a, **k: warned.append(str(msg)))
    train, held = data_files
    run_dir = tmp_path / "run"
    argv = [a for a in flags(tiny_model_dir, train, held, run_dir) if a not in ("--disable_tqdm", "true")]
    assert main([*argv, "--max_steps", "3", "--save_strategy", "no", "--quality_steps", "2"]) == 0
    err = capfd.readouterr().err
    assert not [m for m in warned if "already one" in m], warned
    assert "You are adding a" not in err and "there is already one" not in err, err
    assert "{'loss'" not in err and "probe_kl=" in err, err
    assert "Map" not in err and "Loading weights" not in err, err
    rows = read_trajectory(run_dir / "trajectory.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and "step_quality" in rows[1] and "probe_kl" in rows[1]
