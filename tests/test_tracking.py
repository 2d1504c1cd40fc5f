"""The probe KL, its standard error, the probe KL per token and the step quality reach the trainer's log:
``log_history`` (``trainer_state.json``) and every ``report_to`` tracker (here tensorboard), at their steps,
with the values ``trajectory.jsonl`` records."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import feedback_rows
from datasets import Dataset

from ktos import KTOSConfig, KTOSTrainer
from ktos.cli import main
from ktos.models import load_model_and_tokenizer
from ktos.runs.files import read_trajectory

PROBE_KEYS = ("probe_kl", "probe_kl_se", "probe_kl_per_token")


def tensorboard_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the run's tensorboard event files: tag -> {step: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for events in run_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in accumulator.Scalars(tag)})
    return scalars


def tensorboard_run(
    model_dir: Path, out: Path, rows: tuple[int, int], **fields: Any
) -> tuple[KTOSTrainer, dict[str, dict[int, float]]]:
    """A library user's script: ``KTOSTrainer.train()`` on the tiny model with ``report_to="tensorboard"``, no
    callback code, only ``fields`` of the config and an eval set (``rows``: train and eval sizes, half desirable);
    returns the trainer and its tensorboard scalars."""
    pytest.importorskip("tensorboard")
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    args = KTOSConfig(
        output_dir=str(out), report_to="tensorboard", per_device_train_batch_size=4, max_length=32, learning_rate=1e-3,
        gradient_checkpointing=False, save_strategy="no", disable_tqdm=True, **fields,
    )  # fmt: skip
    trainer = KTOSTrainer(
        model=model, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list(feedback_rows(rows[0], rows[0] // 2)),
        eval_dataset=Dataset.from_list(feedback_rows(rows[1], rows[1] // 2, seed=1)),
    )  # fmt: skip
    trainer.train()
    return trainer, tensorboard_scalars(out)


def measured(rows: list[dict], key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in rows if key in r}


def test_the_config_alone_logs_the_probe_and_update_norm_to_tensorboard(tiny_model_dir, tmp_path) -> None:
    # A library user's script: no probe or callback code, only the config's fields and an eval set.
    trainer, scalars = tensorboard_run(
        tiny_model_dir, tmp_path, (24, 16), kl_probe_size=32, kl_probe_steps=5, max_steps=5
    )
    history = trainer.state.log_history
    for key, steps in [("probe_kl", [1, 5]), ("probe_kl_se", [1, 5]), ("update_norm", [1, 2, 3, 4, 5])]:
        in_history = {entry["step"]: entry[key] for entry in history if key in entry}
        assert sorted(in_history) == steps, key
        assert scalars[f"train/{key}"] == pytest.approx(in_history, rel=1e-6), key  # tensorboard stores float32
    assert trainer.probe is not None and trainer.probe.n_pairs == 16  # all of the eval set: it is under 32
    assert max(abs(v) for v in scalars["train/probe_kl"].values()) > 0  # the policy moved: values have content


@pytest.mark.slow
@pytest.mark.parametrize("logging_steps", [1, 4])
def test_probe_and_step_quality_reach_tensorboard_and_log_history(tiny_model_dir, tmp_path, logging_steps) -> None:
    pytest.importorskip("tensorboard")
    train, held = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in feedback_rows(40, 30)))
    held.write_text("".join(json.dumps(r) + "\n" for r in feedback_rows(16, 8, seed=1)))
    run_dir = tmp_path / "run"
    argv = [
        "train", "--model_name_or_path", str(tiny_model_dir), "--train_data", str(train), "--eval_data", str(held),
        "--output_dir", str(run_dir), "--per_device_train_batch_size", "4", "--max_length", "32",
        "--gradient_checkpointing", "false", "--kl_probe_size", "16", "--kl_probe_steps", "3", "--quality_steps", "2",
        "--max_steps", "6", "--learning_rate", "1e-3", "--logging_steps", str(logging_steps), "--save_steps", "6",
        "--disable_tqdm", "true", "--report_to", "tensorboard",
    ]  # fmt: skip
    assert main(argv) == 0
    rows = read_trajectory(run_dir / "trajectory.jsonl")
    # Steps that measure are logged even between logging_steps: the probe's (step 1, every 3rd, the last) and
    # the quality's (step 2); one trajectory row per logged step.
    assert [r["step"] for r in rows] == ([1, 2, 3, 4, 5, 6] if logging_steps == 1 else [1, 2, 3, 4, 6])
    assert sorted(measured(rows, "probe_kl")) == [1, 3, 6]
    assert sorted(measured(rows, "step_quality")) == [2]
    assert max(abs(v) for v in measured(rows, "probe_kl").values()) > 0  # the policy moved: values have content

    scalars = tensorboard_scalars(run_dir)
    history = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    for key in (*PROBE_KEYS, "step_quality"):
        expected = measured(rows, key)
        assert expected, key
        tags = [tag for tag in scalars if tag.split("/", 1)[-1] == key]
        assert len(tags) == 1, (key, sorted(scalars))
        finite = {step: v for step, v in expected.items() if math.isfinite(v)}
        assert scalars[tags[0]] == pytest.approx(finite, rel=1e-6), key  # tensorboard stores float32
        in_history = {entry["step"]: entry[key] for entry in history if key in entry}
        assert in_history == pytest.approx(expected, nan_ok=True), key
