"""TRL's habits kept: evaluation during training (``--eval_strategy``), TRL's dataset arguments
(``--dataset_name`` and its splits), a model card that names the method, and device defaults that leave
Apple's MPS alone."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import feedback_rows, make_trainer
from datasets import Dataset

import ktos.config
import ktos.data
from ktos import KTOSConfig, compat
from ktos.cli import main
from ktos.data import DataValidationError
from ktos.data_stages import prepare, split
from ktos.runs.command import parse_train_args
from ktos.runs.files import read_trajectory
from ktos.runs.run import DataArguments, load_data

REPO = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    """What ``ktos prepare`` then ``ktos split`` write: ``split/train`` and ``split/eval`` dataset dirs."""
    prepare(str(write_jsonl(tmp_path / "all.jsonl", feedback_rows(48, 32))), tmp_path / "prepared")
    split(tmp_path / "prepared", tmp_path / "split", eval_fraction=0.25)
    return tmp_path / "split"


@pytest.mark.slow
def test_eval_strategy_steps_evaluates_a_dataset_name_test_split(tiny_model_dir, split_dir, tmp_path) -> None:
    # TRL's dataset arguments on the output of `ktos split`, evaluated every 2 steps: the eval set is the test
    # split, evaluation logs TRL's eval metrics at steps 2 and 4, and the run otherwise trains as usual.
    run_dir = tmp_path / "run"
    argv = [
        "train", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(split_dir),
        "--dataset_test_split", "eval", "--eval_strategy", "steps", "--eval_steps", "2", "--output_dir", str(run_dir),
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--max_length", "32",
        "--gradient_checkpointing", "false", "--kl_probe_size", "8", "--max_steps", "4", "--learning_rate", "1e-3",
        "--save_steps", "4", "--disable_tqdm", "true", "--loss_type", "kto_s",
    ]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((split_dir / "manifest.json").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "completed" and info["train_rows"] == manifest["train"]["rows"] == 36
    history = json.loads((run_dir / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    evals = [entry for entry in history if "eval_loss" in entry]
    assert [entry["step"] for entry in evals] == [2, 4]
    for entry in evals:
        assert math.isfinite(entry["eval_loss"]) and math.isfinite(entry["eval_kl"]), entry
        assert {"eval_rewards/chosen", "eval_rewards/rejected"} <= entry.keys()
    assert [r["step"] for r in read_trajectory(run_dir / "trajectory.jsonl")] == [1, 2, 3, 4]  # eval adds no rows
    card = (run_dir / "README.md").read_text()  # written with the checkpoint, as TRL does
    assert "trained with KTO-S" in card and "## Method: KTO-S" in card


def test_dataset_arguments_parse_with_trls_names(tmp_path) -> None:
    required = ["--model_name_or_path", "m", "--output_dir", str(tmp_path)]
    dataset_flags = ["--dataset_name", "org/feedback", "--dataset_config", "en",
                     "--dataset_train_split", "tr", "--dataset_test_split", "te"]  # fmt: skip
    _, _, data, _ = parse_train_args(required + dataset_flags)
    assert (data.dataset_name, data.dataset_config, data.dataset_train_split, data.dataset_test_split) == (
        "org/feedback",
        "en",
        "tr",
        "te",
    )
    assert data.train_data is None
    for both_or_neither in ([], ["--train_data", "d", "--dataset_name", "x"]):
        with pytest.raises(SystemExit, match="one of --train_data and --dataset_name"):
            parse_train_args(required + both_or_neither)


def test_dataset_name_loads_a_local_file_and_a_hub_config(tmp_path, monkeypatch) -> None:
    rows = feedback_rows(12, 6)
    source = write_jsonl(tmp_path / "feedback.jsonl", rows)
    config = KTOSConfig(output_dir=str(tmp_path / "run"))
    train, held = load_data(DataArguments(dataset_name=str(source)), config)
    assert train["completion"] == [r["completion"] for r in rows] and held is None  # no evaluation: no eval set
    evaluating = KTOSConfig(output_dir=str(tmp_path / "run"), eval_strategy="steps", eval_steps=2)
    with pytest.raises(DataValidationError, match="single file holds no 'test' split"):
        load_data(DataArguments(dataset_name=str(source)), evaluating)  # never the training rows again
    with pytest.raises(ValueError, match="needs an eval set"):
        load_data(DataArguments(train_data=str(source)), evaluating)

    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return Dataset.from_list(rows)

    monkeypatch.setattr(ktos.data.datasets, "load_dataset", fake_load_dataset)
    args = DataArguments(dataset_name="org/feedback", dataset_config="en", dataset_test_split="validation")
    train, held = load_data(args, evaluating)
    assert calls == [("org/feedback", "en", "train"), ("org/feedback", "en", "validation")]
    assert len(train) == len(held) == 12


@pytest.mark.parametrize(
    ("overrides", "name", "described"),
    [
        ({"use_kto_s": True}, "KTO-S", "sign-corrected reference point"),
        ({"use_kto_s": False}, "KTO", "KTO as TRL computes it"),
        ({"loss_type": "apo_zero_unpaired"}, "KTO-zero", "reference point 0"),
    ],
)
def test_model_card_names_and_describes_the_method(
    tiny_model_dir, tmp_path, feedback_dataset, overrides, name, described
):
    trainer = make_trainer(tiny_model_dir, tmp_path, feedback_dataset, **overrides)
    assert trainer._name == name
    trainer.create_model_card(model_name="tiny-ktos")
    card = (tmp_path / "README.md").read_text()
    assert f"This model was trained with {name}" in card and f"## Method: {name}\n" in card
    assert described in card and "ethayarajh2024kto" in card  # KTO, on which every method builds, is cited
    assert "- ktos" in card  # tagged
    if name != "KTO":  # KTO-S and KTO-zero are not "a method introduced in" the KTO paper
        assert "a method introduced in" not in card
        assert card.index("## Method") < card.index("## Citations")


def device_defaults(monkeypatch, *, cuda: bool, mps: bool, mps_bf16: bool = False, **fields) -> KTOSConfig:
    """A ``KTOSConfig`` with only its device defaults applied, on a machine with(out) CUDA and MPS (TrainingArguments'
    own checks would look for the real device)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(ktos.config, "is_torch_bf16_gpu_available", lambda: mps_bf16)
    config = KTOSConfig.__new__(KTOSConfig)
    config.bf16, config.fp16, config.use_cpu = None, False, False
    for key, value in fields.items():
        setattr(config, key, value)
    config._default_device()
    return config


@pytest.mark.parametrize(
    ("cuda", "mps", "mps_bf16", "expected"),
    [
        (False, False, False, (True, False)),  # neither: the CPU, fp32
        (False, True, False, (False, False)),  # MPS: left on, bf16 only where it is supported
        (False, True, True, (False, True)),
        (True, False, False, (False, None)),  # CUDA: TRL's defaults (bf16 unless fp16)
        (True, True, False, (False, None)),
    ],
)
def test_device_defaults_force_the_cpu_only_without_cuda_and_mps(monkeypatch, cuda, mps, mps_bf16, expected) -> None:
    config = device_defaults(monkeypatch, cuda=cuda, mps=mps, mps_bf16=mps_bf16)
    assert (config.use_cpu, config.bf16) == expected
    assert device_defaults(monkeypatch, cuda=cuda, mps=mps, mps_bf16=mps_bf16, bf16=True).bf16 is True  # set: kept


def test_a_config_built_on_mps_keeps_the_mps_device(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(ktos.config, "is_torch_bf16_gpu_available", lambda: False)
    config = KTOSConfig(output_dir=str(tmp_path))
    assert config.use_cpu is False and config.bf16 is False


def test_evaluate_with_compute_metrics(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    # With compute_metrics, transformers asks for predictions: TRL < 1.6 gives dummy ones, and from 1.6 on, where TRL
    # would ask the hooked loss for logits, KTOSTrainer gives the same, so evaluation works on every TRL.
    from ktos.models import load_model_and_tokenizer
    from ktos.trainer import KTOSTrainer

    calls = []

    def compute_metrics(prediction) -> dict[str, float]:
        calls.append(prediction)
        return {"called": 1.0}

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    args = KTOSConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                      max_length=32, gradient_checkpointing=False, report_to="none", disable_tqdm=True)  # fmt: skip
    held = Dataset.from_list(feedback_rows(8, 4, seed=2))
    trainer = KTOSTrainer(model=model, args=args, train_dataset=feedback_dataset, eval_dataset=held,
                          processing_class=tokenizer, compute_metrics=compute_metrics)  # fmt: skip
    metrics = trainer.evaluate()
    assert len(calls) == 1 and metrics["eval_called"] == 1.0
    assert math.isfinite(metrics["eval_loss"]) and math.isfinite(metrics["eval_kl"])


def private_names(path: Path) -> set[str]:
    """The underscore names a module's code uses: attributes (``x._name``), defined functions and methods, and
    string constants that are one (``getattr(x, "_name")``); docstrings and comments are not code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            names.add(node.value)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def test_the_private_trl_names_ktos_touches_are_the_listed_ones(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    # Every underscore name in the library's code that TRL's trainer has (on its class or a built trainer) is
    # listed in ktos.compat, and this TRL era's listed names exist on this TRL.
    trl_trainer = make_trainer(tiny_model_dir, tmp_path, feedback_dataset, cls=compat.KTOTrainer)
    trls = set(dir(compat.KTOTrainer)) | set(vars(trl_trainer))
    used = set().union(*(private_names(path) for path in (REPO / "src/ktos").glob("*.py")))
    assert used & trls <= set().union(*compat.TRL_PRIVATE_NAMES.values()), sorted(used & trls)
    assert compat.PRIVATE_NAMES <= trls and compat.PRIVATE_NAMES <= used
    assert len(compat.TRL_PRIVATE_NAMES[">= 1.6"]) == 4


@pytest.mark.parametrize("loss_type", ["kto_s", "apo_zero_unpaired"])
def test_the_training_set_is_read_in_file_order(tiny_model_dir, tmp_path, loss_type) -> None:
    # Through TRL's and transformers' own train_sampling_strategy="sequential", with no sampler override.
    rows = feedback_rows(24, 12)
    trainer = make_trainer(tiny_model_dir, tmp_path, Dataset.from_list(rows), loss_type=loss_type)
    labels = [bool(v) for batch in trainer.get_train_dataloader() for v in compat.labels(batch)]
    assert labels == [row["label"] for row in rows]


def test_every_trl_member_ktos_relies_on_is_listed_and_exists_here(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    # Each listed member exists in the installed TRL where ktos relies on it (on the class, a built trainer or its
    # module); every KTOSTrainer method that overrides one of KTOTrainer's is listed as an override; and every
    # private name of the listed private-names registry is in the coupling list too.
    import importlib

    from ktos import trl_coupling
    from ktos.trainer import KTOSTrainer

    trl_trainer = make_trainer(tiny_model_dir, tmp_path, feedback_dataset, cls=compat.KTOTrainer)
    for name, coupling in trl_coupling.TRL_COUPLING.items():
        if not trl_coupling.relied_on(coupling):
            continue
        owner, _, member = name.rpartition(".")
        if owner == "KTOTrainer":
            assert hasattr(compat.KTOTrainer, member) or member in vars(trl_trainer), name
        elif owner:
            assert hasattr(importlib.import_module(owner), member), name
        else:
            assert hasattr(compat, member), name
    defined = {n for n, v in vars(KTOSTrainer).items() if callable(v) or isinstance(v, property)}
    overrides = {n for n in defined if hasattr(compat.KTOTrainer, n)}
    listed = {
        n.partition(".")[2]
        for n, c in trl_coupling.TRL_COUPLING.items()
        if c.how == "overrides" and trl_coupling.relied_on(c)
    }
    assert overrides == listed, (sorted(overrides - listed), sorted(listed - overrides))
    assert {f"KTOTrainer.{n}" for n in compat.PRIVATE_NAMES} <= set(trl_coupling.TRL_COUPLING)


def test_docs_show_the_trl_coupling_list() -> None:
    from ktos import trl_coupling

    assert trl_coupling.coupling_table() in (REPO / "docs/library.md").read_text()
