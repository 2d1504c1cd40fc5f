"""KTOSTrainer on TRL 1.5.1 with a real tiny model: loss equivalence, label checks, real short runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl.experimental.kto import KTOConfig, KTOTrainer

from conftest import feedback_rows
from ktos.models import load_model_and_tokenizer
from ktos.trainer import KTOSConfig, KTOSTrainer, TrajectoryCallback, check_labels
from ktos.trajectories import read_trajectory

FAST = {
    "per_device_train_batch_size": 4,
    "max_length": 32,
    "gradient_checkpointing": False,
    "save_strategy": "no",
    "disable_tqdm": True,
    "learning_rate": 1e-3,
}


def make_trainer(model_dir: Path, tmp: Path, data: Dataset, cls=KTOSTrainer, **overrides) -> KTOTrainer:
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    config_cls = KTOSConfig if cls is KTOSTrainer else KTOConfig
    fields = {**FAST, **overrides}
    if cls is not KTOSTrainer:
        fields = {k: v for k, v in fields.items() if k != "use_kto_s"}
        fields.update(use_cpu=True, bf16=False, report_to="none", logging_steps=1)
    args = config_cls(output_dir=str(tmp), **fields)
    return cls(model=model, args=args, train_dataset=data, processing_class=tokenizer)


def random_logps(seed: int, n_chosen: int, n_rejected: int, batch: int):
    g = torch.Generator().manual_seed(seed)
    policy = [-10 * torch.rand(n, generator=g) for n in (n_chosen, n_rejected, batch)]
    reference = [p + 0.8 * torch.randn(p.shape, generator=g) for p in policy]
    return policy[0], policy[1], policy[2], reference[0], reference[1], reference[2]


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.34, 1.0), (1.3, 0.7)])
def test_kto_mode_equals_trl_kto_loss(tiny_model_dir, tmp_path, feedback_dataset, weights) -> None:
    dw, uw = weights
    ours = make_trainer(tiny_model_dir, tmp_path / "a", feedback_dataset, use_kto_s=False, beta=0.2,
                        desirable_weight=dw, undesirable_weight=uw)
    trl = make_trainer(tiny_model_dir, tmp_path / "b", feedback_dataset, cls=KTOTrainer, beta=0.2,
                       desirable_weight=dw, undesirable_weight=uw)
    for seed, (nc, nr) in enumerate([(3, 5), (8, 0), (0, 8), (1, 1)]):
        inputs = random_logps(seed, nc, nr, 8)
        for got, want in zip(ours.kto_loss(*inputs), trl.kto_loss(*inputs), strict=True):
            torch.testing.assert_close(got.reshape(-1), want.reshape(-1))


def test_kto_s_mode_uses_the_sign_corrected_reference_point(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    trainer = make_trainer(tiny_model_dir, tmp_path, feedback_dataset, use_kto_s=True, beta=0.2)
    chosen = torch.tensor([-1.0, -3.0])  # r = +2 and 0
    rejected = torch.tensor([-6.0])  # r = -1
    losses, _, _, kl = trainer.kto_loss(
        chosen, rejected, torch.tensor([-4.0, -4.0]), torch.tensor([-3.0, -3.0]), torch.tensor([-5.0]),
        torch.tensor([-5.0, -5.0]),
    )
    z0 = 1.0
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [1 - sig(0.2 * (2 + z0)), 1 - sig(0.0), 1 - sig(-0.2 * (-1 - z0))]
    assert kl.item() == pytest.approx(z0)
    torch.testing.assert_close(losses, torch.tensor(expected))


def test_labels_as_ints_are_coerced() -> None:
    ds = Dataset.from_list([{"prompt": "a", "completion": "b", "label": v} for v in (1, 0, 1)])
    assert check_labels(ds)["label"] == [True, False, True]


@pytest.mark.parametrize(
    ("labels", "first_bad"),
    [([1, 0, 2, 1], 2), (["no", "yes", "yes", "no"], 0), ([True, False, None, True], 2), ([1.0, 0.0, 0.5], 0)],
)
def test_bad_labels_raise_naming_column_and_rows(labels, first_bad) -> None:
    n = len(labels)
    ds = Dataset.from_dict({"prompt": ["a"] * n, "completion": ["b"] * n, "label": labels})
    with pytest.raises(ValueError, match=rf"column 'label': values that are not bool or 0/1 at rows \[{first_bad}") as err:
        check_labels(ds)
    assert repr(ds["label"][first_bad]) in str(err.value)


@pytest.mark.parametrize("label", [True, False])
def test_one_label_train_set_is_refused_before_training(tiny_model_dir, tmp_path, label) -> None:
    data = Dataset.from_list([{"prompt": "Q: 1+1=", "completion": " 2", "label": label}] * 8)
    with pytest.raises(ValueError, match="KTO needs both labels"):
        make_trainer(tiny_model_dir, tmp_path, data)


def run_steps(model_dir: Path, run_dir: Path, data: Dataset, steps: int, **overrides) -> KTOSTrainer:
    trainer = make_trainer(model_dir, run_dir, data, max_steps=steps, **overrides)
    callback = TrajectoryCallback(run_dir)
    trainer.add_callback(callback)
    trainer.train()
    return trainer


@pytest.mark.slow
@pytest.mark.parametrize("use_kto_s", [False, True])
def test_short_real_run_logs_one_finite_row_per_step(tiny_model_dir, tmp_path, feedback_dataset, use_kto_s) -> None:
    run_steps(tiny_model_dir, tmp_path, feedback_dataset, 4, use_kto_s=use_kto_s, beta=0.2)
    rows = read_trajectory(tmp_path / "trajectory.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert math.isfinite(row["kl"]) and math.isfinite(row["loss"])
        assert {"rewards/chosen", "learning_rate", "grad_norm", "elapsed_s"} <= row.keys()


@pytest.mark.slow
@pytest.mark.parametrize("label", [True, False])
def test_one_label_batches_train_with_finite_loss(tiny_model_dir, tmp_path, label) -> None:
    # Sequential batches of 4: the first two batches hold one label only, the last both.
    rows = feedback_rows(12, 6)
    ordered = sorted(rows, key=lambda r: r["label"] != label)
    run_steps(tiny_model_dir, tmp_path, Dataset.from_list(ordered), 3)
    logged = read_trajectory(tmp_path / "trajectory.jsonl")
    assert len(logged) == 3
    assert all(math.isfinite(r["loss"]) for r in logged)
    one_label_key = "rewards/rejected" if label else "rewards/chosen"
    assert one_label_key not in logged[0]  # the first batch really held one label


@pytest.mark.slow
def test_divergence_stops_training_and_marks_run(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    (tmp_path / "run_info.json").write_text(json.dumps({"status": "running"}))
    trainer = run_steps(tiny_model_dir, tmp_path, feedback_dataset, 6, learning_rate=float("inf"))
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["status"] == "diverged"
    assert trainer.state.global_step == info["diverged_at_step"] < 6
