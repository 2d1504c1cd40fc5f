"""`ktos train` end to end on a tiny model: flags and YAML, run directory contents, resume."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trl
from conftest import BAD_DATA, expected_grads, feedback_rows, make_trainer, with_value
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from ktos.cli import main
from ktos.models import load_model_and_tokenizer
from ktos.runs.command import parse_train_args
from ktos.runs.files import read_trajectory


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
        "train",
        "--model_name_or_path",
        str(model_dir),
        "--train_data",
        str(train),
        "--eval_data",
        str(held),
        "--output_dir",
        str(run_dir),
        "--per_device_train_batch_size",
        "4",
        "--max_length",
        "32",
        "--gradient_checkpointing",
        "false",
        "--kl_probe_size",
        "16",
        "--disable_tqdm",
        "true",
    ]


@pytest.mark.parametrize("spelling", ["--config=FILE", "--config FILE"])
def test_config_file_then_flags_through_trls_parser(tmp_path, spelling) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("use_kto_s: false\nbeta: 0.3\nlearning_rate: 5e-5\nmax_steps: 7\n")
    flag = [f"--config={config}"] if spelling == "--config=FILE" else ["--config", str(config)]
    required = ["--model_name_or_path", "m", "--train_data", "d", "--output_dir", str(tmp_path / "run")]
    *_, args = parse_train_args(required + flag + ["--max_steps", "3"])
    assert (args.use_kto_s, args.beta, args.learning_rate, args.max_steps) == (False, 0.3, 5e-5, 3)
    *_, args = parse_train_args(required + flag + ["--use_kto_s", "true"])
    assert args.use_kto_s is True and args.method == "kto_s"  # a flag wins over the file
    *_, args = parse_train_args(required)
    assert args.loss_type == "kto" and args.use_kto_s is False and args.beta != 0.3  # no file: TRL's defaults


@pytest.mark.parametrize(
    ("yaml_text", "flags", "named"),
    [("use_kto_s: false\nbetta: 0.3\n", [], "betta"), ("beta: 0.3\n", ["--use_ktos", "false"], "--use_ktos")],
)
def test_unknown_keys_are_refused_naming_the_key(tmp_path, yaml_text, flags, named) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(yaml_text)
    argv = ["--model_name_or_path", "m", "--train_data", "d", "--output_dir", str(tmp_path), f"--config={config}"]
    with pytest.raises(SystemExit, match=named):
        parse_train_args(argv + flags)


@pytest.mark.slow
@pytest.mark.parametrize("use_kto_s", [False, True], ids=["kto", "kto_s"])
def test_the_cli_flag_reaches_the_optimizer(tiny_model_dir, primed_model_dir, data_files, tmp_path, use_kto_s) -> None:
    # One plain-SGD step through `ktos train` from a policy primed away from its reference (r, z0 > 0):
    # the saved weights are theta - lr * grad of the configured loss on the first batch, not of the other.
    train, held = data_files
    run_dir, lr = tmp_path / "run", 0.05
    config = tmp_path / "train.yaml"
    config.write_text(f"use_kto_s: {str(not use_kto_s).lower()}\nbeta: 0.2\n")  # the flag below must win
    flags = base_flags(primed_model_dir, train, held, run_dir) + [
        f"--config={config}", "--use_kto_s", str(use_kto_s).lower(), "--ref_model_name_or_path", str(tiny_model_dir),
        "--optim", "sgd", "--learning_rate", str(lr), "--lr_scheduler_type", "constant", "--max_grad_norm", "0",
        "--max_steps", "1", "--save_strategy", "no", "--kl_probe_size", "0",
    ]  # fmt: skip
    assert main(flags) == 0
    trained = load_file(run_dir / "model.safetensors")
    twin = make_trainer(primed_model_dir, tmp_path / "twin", Dataset.from_json(str(train)), ref_dir=tiny_model_dir)
    batch = next(iter(twin.get_train_dataloader()))
    reference = load_model_and_tokenizer(str(tiny_model_dir))[0]
    policy = twin.model
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    theta = torch.cat([policy.state_dict()[n].reshape(-1) for n in names])
    step = -lr * torch.stack([
        expected_grads(policy, reference, batch, beta=0.2, dw=1.0, uw=1.0, sign_correction=s)
        for s in (use_kto_s, not use_kto_s)
    ])  # fmt: skip
    observed = torch.cat([trained[n].reshape(-1) for n in names]) - theta
    assert (step[0] - step[1]).norm() > 0.05 * step[0].norm()
    assert (observed - step[0]).norm() < 1e-3 * step[0].norm()
    assert json.loads((run_dir / "run_info.json").read_text())["method"] == ("kto_s" if use_kto_s else "kto")


@pytest.mark.slow
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
    assert info["versions"]["trl"] == trl.__version__ and "git_revision" in info and info["seed"] == 42
    # the base it started from, named and checksummed (the SHA-256 of its weights file)
    weights = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert info["base"] == {"name": tiny_model_dir.name, "name_or_path": str(tiny_model_dir), "sha256": weights}
    assert info["quality"]["metric"] == "preference_accuracy" and 0 <= info["quality"]["value"] <= 1
    rows = read_trajectory(run_dir / "trajectory.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["probe_kl"]) and math.isfinite(r["probe_kl_per_token"]) for r in rows)
    assert rows[0]["learning_rate"] > 0 and all(math.isfinite(r["kl"]) for r in rows)


@pytest.mark.slow
def test_rerun_resumes_from_last_checkpoint(tiny_model_dir, data_files, tmp_path) -> None:
    train, held = data_files
    run_dir = tmp_path / "run"
    flags = base_flags(tiny_model_dir, train, held, run_dir) + ["--save_steps", "2", "--learning_rate", "1e-3"]
    assert main(flags + ["--max_steps", "2"]) == 0
    assert (run_dir / "checkpoint-2" / "trajectory.jsonl").is_file()
    (run_dir / "trajectory.jsonl").unlink()  # as Snakemake does to the outputs of an incomplete job
    (run_dir / "checkpoint-3").mkdir()  # a checkpoint cut off mid-save is skipped
    assert main(flags + ["--max_steps", "4"]) == 0
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-2") and info["status"] == "completed"
    assert [r["step"] for r in read_trajectory(run_dir / "trajectory.jsonl")] == [1, 2, 3, 4]


BAD_CLI_DATA = [*BAD_DATA, (with_value("label", (3,), 2), "'label': values that are not bool or 0/1 at rows [3]")]


@pytest.mark.parametrize(
    ("breaks", "named"), BAD_CLI_DATA, ids=["no-completion", "none", "empty", "blank-prompt", "label-2"]
)
def test_bad_data_exits_2_with_one_line_naming_column_and_rows(tiny_model_dir, tmp_path, capsys, breaks, named):
    # The same data errors as KTOSTrainer's (tests/test_trainer.py), before any model is loaded.
    train = write_jsonl(tmp_path / "bad.jsonl", breaks(feedback_rows(8, 4)))
    argv = ["train", "--model_name_or_path", str(tiny_model_dir), "--train_data", str(train)]
    code = main([*argv, "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    # Library INFO lines may come first; the error itself is one line, no traceback.
    errors = [line for line in err.splitlines() if line.startswith("ktos train: error:")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1
    assert named.split(": ", 1)[-1] in errors[0]


@pytest.mark.slow
def test_a_folder_of_split_files_trains_through_trl_kto_and_ktos_train_alike(tiny_model_dir, tmp_path) -> None:
    # TRL's habits: --dataset_name takes a local folder of train.jsonl/test.jsonl, and the run directory holds the
    # final model and tokenizer, loadable with from_pretrained(output_dir), with the same flags for both commands.
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", feedback_rows(24, 12))
    write_jsonl(folder / "test.jsonl", feedback_rows(8, 4, seed=1))
    flags = [
        "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(folder), "--dataset_train_split", "train",
        "--dataset_test_split", "test", "--per_device_train_batch_size", "4", "--max_length", "32", "--max_steps", "2",
        "--learning_rate", "1e-3", "--gradient_checkpointing", "false", "--use_cpu", "true", "--bf16", "false",
        "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
    ]  # fmt: skip
    assert main(["train", *flags, "--output_dir", str(tmp_path / "ktos")]) == 0
    outputs = [tmp_path / "ktos"]
    trl_kto = [sys.executable, "-m", "trl.scripts.kto", *flags, "--output_dir", str(tmp_path / "trl")]
    result = subprocess.run(trl_kto, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs.append(tmp_path / "trl")
    for output in outputs:
        model = AutoModelForCausalLM.from_pretrained(output)
        tokenizer = AutoTokenizer.from_pretrained(output)
        assert model.num_parameters() > 0 and tokenizer("Q: 1+1=")["input_ids"], output
    info = json.loads((tmp_path / "ktos" / "run_info.json").read_text())
    assert info["status"] == "completed" and info["train_rows"] == 24
