"""Training options real users turn on: LoRA adapters (TRL's model options), precomputed reference
log-probs, and tracking (tensorboard), each on the installed TRL with a real tiny model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, GradientAudit, feedback_rows, make_trainer
from datasets import Dataset
from peft import LoraConfig, get_peft_model

from ktos import KTOSConfig, KTOSTrainer
from ktos.cli import main
from ktos.models import load_model_and_tokenizer
from ktos.probe import KLProbe
from ktos.runs.files import read_trajectory

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def lora_trainer(model_dir, tmp_path, data, **overrides) -> KTOSTrainer:
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    args = KTOSConfig(output_dir=str(tmp_path), **{**FAST, **overrides})
    return KTOSTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                       peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA))  # fmt: skip


def test_lora_trains_only_the_adapter_against_the_frozen_base(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    trainer = lora_trainer(tiny_model_dir, tmp_path, feedback_dataset, max_steps=3, learning_rate=1e-2)
    assert trainer.ref_model is None  # TRL's arrangement: the base weights (adapter off) are the reference
    probe = KLProbe(trainer, Dataset.from_list(feedback_rows(8, 4, seed=3)), size=8)
    assert probe.measure()["probe_kl"] == pytest.approx(0.0, abs=1e-6)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all("lora_" in n for n in changed), sorted(changed)[:5]
    assert any("lora_B" in n for n in changed)
    logged = [row for row in trainer.state.log_history if "kl" in row]
    assert logged[0]["kl"] == 0.0  # step 1: the policy still equals the base
    assert probe.measure()["probe_kl"] != pytest.approx(0.0, abs=1e-6)  # the adapter moved the policy


@pytest.mark.slow
@pytest.mark.parametrize("use_kto_s", [False, True], ids=["kto", "kto_s"])
def test_lora_optimizer_steps_use_the_configured_loss(
    tiny_model_dir, primed_model_dir, tmp_path, feedback_dataset, use_kto_s
):
    # The adapter's gradients are those of the configured loss, as without LoRA (tests/test_trainer.py).
    policy, tokenizer = load_model_and_tokenizer(str(primed_model_dir))
    policy = get_peft_model(policy, LoraConfig(task_type="CAUSAL_LM", **LORA))
    reference = load_model_and_tokenizer(str(tiny_model_dir))[0]
    args = KTOSConfig(output_dir=str(tmp_path), **{
        **FAST, "use_kto_s": use_kto_s, "beta": 0.2, "desirable_weight": 0.4, "optim": "sgd", "learning_rate": 0.5,
        "lr_scheduler_type": "constant", "max_grad_norm": 0.0, "max_steps": 3,
    })  # fmt: skip
    trainer = KTOSTrainer(model=policy, ref_model=reference, args=args, train_dataset=feedback_dataset,
                          processing_class=tokenizer)  # fmt: skip
    audit = GradientAudit(list(trainer.get_train_dataloader()), reference, beta=0.2, dw=0.4, uw=1.0)
    trainer.add_callback(audit)
    trainer.train()
    configured, other = ("to_kto_s", "to_kto") if use_kto_s else ("to_kto", "to_kto_s")
    assert len(audit.rows) == 3
    for row in audit.rows:
        assert row["gap"] > 0.05 and row[configured] < 1e-3 and row[other] > 0.5 * row["gap"], row


@pytest.mark.slow
def test_precomputed_reference_logps_train_the_same(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    trajectories = []
    for precompute in (False, True):
        trainer = make_trainer(tiny_model_dir, tmp_path / str(precompute), feedback_dataset, max_steps=5,
                               precompute_ref_log_probs=precompute, use_kto_s=True)  # fmt: skip
        trainer.train()
        trajectories.append([(r["loss"], r["kl"]) for r in trainer.state.log_history if "kl" in r])
    assert len(trajectories[0]) == 5
    torch.testing.assert_close(torch.tensor(trajectories[1]), torch.tensor(trajectories[0]), rtol=1e-4, atol=1e-5)
    assert max(kl for _, kl in trajectories[0][1:]) > 0  # the runs moved: the comparison has content


@pytest.mark.slow
def test_cli_lora_run_with_tensorboard_tracking(tiny_model_dir, tmp_path) -> None:
    pytest.importorskip("tensorboard")
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in feedback_rows(40, 30)))
    run_dir = tmp_path / "run"
    argv = [
        "train", "--model_name_or_path", str(tiny_model_dir), "--train_data", str(train), "--output_dir", str(run_dir),
        "--per_device_train_batch_size", "4", "--max_length", "32", "--gradient_checkpointing", "false",
        "--max_steps", "3", "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "tensorboard",
        "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj",
    ]  # fmt: skip
    assert main(argv) == 0
    assert list(run_dir.rglob("events.out.tfevents.*")), "no tensorboard event file"
    assert (run_dir / "adapter_config.json").is_file()  # the adapter, not a full model, is saved
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["model"]["use_peft"] is True and info["status"] == "completed"
    assert [r["step"] for r in read_trajectory(run_dir / "trajectory.jsonl")] == [1, 2, 3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_gather_the_kl_reference_point(tiny_model_dir, primed_model_dir, tmp_path) -> None:
    # Two CPU processes over gloo, through `accelerate launch`: the logged kl of each step is the mean of
    # the two processes' own estimates, clamped at 0, as TRL gathers it.
    launcher = Path(sys.executable).parent / "accelerate"
    script = Path(__file__).with_name("distributed_kl.py")
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(script), str(primed_model_dir), str(tiny_model_dir), str(tmp_path)]  # fmt: skip
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    local = [[json.loads(x) for x in (tmp_path / f"rank{r}.jsonl").read_text().split()] for r in (0, 1)]
    logged = [row["kl"] for row in json.loads((tmp_path / "log_history.json").read_text()) if "kl" in row]
    assert len(local[0]) == len(local[1]) == len(logged) == 4
    for step, (a, b, kl) in enumerate(zip(*local, logged, strict=True), 1):
        assert a != pytest.approx(b), step  # the processes saw different batches
        assert kl == pytest.approx(max(0.0, (a + b) / 2), rel=1e-5, abs=1e-6), (step, a, b, kl)
