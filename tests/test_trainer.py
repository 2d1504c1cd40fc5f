"""KTOSTrainer on the installed TRL (1.5.1 to 1.16.0) with real tiny models.

The core guard: the gradients that reach the optimizer, step by step, are those of the configured loss,
computed here by an independent implementation of both losses, and not those of the other one. Also:
plain KTO equals TRL's own KTOTrainer batch by batch; configurations that would bypass the ktos loss are
refused; a bypassed loss stops the first step; label checks; real short runs.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import (
    BAD_DATA,
    FAST,
    GradientAudit,
    expected_grads,
    feedback_rows,
    flat_grads,
    make_trainer,
    relative,
)
from datasets import Dataset
from transformers import TrainerCallback

from ktos import KTOSConfig, KTOSTrainer, check_feedback, compat
from ktos.compat import KTOConfig, KTOTrainer
from ktos.data import DataValidationError
from ktos.models import load_model_and_tokenizer
from ktos.runs.files import read_trajectory
from ktos.runs.trajectory import TrajectoryCallback

#: Plain SGD without clipping or weight decay, three steps: the gradients the optimizer sees are the loss's own.
SGD_AUDIT = dict(
    beta=0.2,
    desirable_weight=0.4,
    undesirable_weight=1.0,
    optim="sgd",
    learning_rate=0.05,
    lr_scheduler_type="constant",
    max_grad_norm=0.0,
    weight_decay=0.0,
    max_steps=3,
)


@pytest.mark.parametrize("use_kto_s", [False, True], ids=["kto", "kto_s"])
def test_every_optimizer_step_uses_the_configured_loss(
    tiny_model_dir, primed_model_dir, tmp_path, feedback_dataset, use_kto_s
):
    # Policy primed away from its reference: r and z0 > 0 from step 1, where the two losses' gradients differ.
    # Plain SGD without clipping, so the gradients the optimizer sees are the loss's own.
    trainer = make_trainer(
        primed_model_dir,
        tmp_path,
        feedback_dataset,
        ref_dir=tiny_model_dir,
        use_kto_s=use_kto_s,
        **SGD_AUDIT,
    )
    audit = GradientAudit(
        list(trainer.get_train_dataloader()), load_model_and_tokenizer(str(tiny_model_dir))[0], beta=0.2, dw=0.4, uw=1.0
    )
    trainer.add_callback(audit)
    trainer.train()
    assert len(audit.rows) == 3, audit.rows
    configured, other = ("to_kto_s", "to_kto") if use_kto_s else ("to_kto", "to_kto_s")
    for row in audit.rows:
        assert row["gap"] > 0.05, row  # the step can tell the two losses apart
        assert row[configured] < 1e-3, row
        assert row[other] > 0.5 * row["gap"], row


class ZeroAudit(GradientAudit):
    """Before each optimizer step: the observed gradient against KTO-zero's and KTO's."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        batch = self.batches[state.global_step]
        observed = flat_grads(model)
        zero = expected_grads(model, self.reference, batch, sign_correction=False, zero=True, **self.loss_kwargs)
        kto = expected_grads(model, self.reference, batch, sign_correction=False, **self.loss_kwargs)
        self.rows.append(
            {"to_zero": relative(observed, zero), "to_kto": relative(observed, kto), "gap": relative(zero, kto)}
        )


def test_apo_zero_unpaired_is_the_former_kto_zero_step_by_step(
    tiny_model_dir, primed_model_dir, tmp_path, feedback_dataset
):
    # loss_type="apo_zero_unpaired", computed by TRL's own code, must train with the loss of ktos' former KTO-zero
    # (reference_point="zero": w * (1 - sigmoid(beta * s * r))) at every step, on every TRL in the range.
    trainer = make_trainer(
        primed_model_dir, tmp_path, feedback_dataset, ref_dir=tiny_model_dir, loss_type="apo_zero_unpaired", **SGD_AUDIT
    )
    assert trainer.args.method == "kto_zero" and trainer._name == "KTO-zero"
    # The same batches with TRL's KL rows (it builds none for apo_zero_unpaired), for KTO's gradient to compare with.
    with_kl = make_trainer(tiny_model_dir, tmp_path / "kl", feedback_dataset, loss_type="kto", **SGD_AUDIT)
    audit = ZeroAudit(
        list(with_kl.get_train_dataloader()), load_model_and_tokenizer(str(tiny_model_dir))[0], beta=0.2, dw=0.4, uw=1.0
    )
    trainer.add_callback(audit)
    trainer.train()
    assert len(audit.rows) == 3, audit.rows
    for row in audit.rows:
        assert row["gap"] > 0.01, row  # z0 is small at this priming: the losses differ by about 3%
        assert row["to_zero"] < 1e-5, row
        assert row["to_kto"] > 0.5 * row["gap"], row
    assert trainer.loss_calls == 3


@pytest.mark.parametrize(
    ("fields", "loss_type"),
    [({}, "kto"), ({"use_kto_s": True}, "kto_s"), ({"use_kto_s": False}, "kto"), ({"loss_type": "kto"}, "kto"),
     ({"use_kto_s": False, "loss_type": "apo_zero_unpaired"}, "apo_zero_unpaired")],
)  # fmt: skip
def test_use_kto_s_is_the_notes_name_for_loss_type_kto_s(tmp_path, fields, loss_type) -> None:
    config = KTOSConfig(output_dir=str(tmp_path), **fields)
    assert (config.loss_type, config.use_kto_s) == (loss_type, loss_type == "kto_s")


@pytest.mark.parametrize(
    "fields",
    [{"use_kto_s": True, "loss_type": "kto"}, {"use_kto_s": True, "loss_type": "apo_zero_unpaired"},
     {"use_kto_s": False, "loss_type": "kto_s"}, {"loss_type": "sigmoid"}],
)  # fmt: skip
def test_a_contradictory_or_unknown_loss_type_is_refused(tmp_path, fields) -> None:
    with pytest.raises(ValueError, match="contradicts|loss_type must be one of"):
        KTOSConfig(output_dir=str(tmp_path), **fields)


def test_update_norm_is_the_norm_of_each_parameter_change(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    trainer = make_trainer(tiny_model_dir, tmp_path, feedback_dataset, max_steps=3, learning_rate=1e-3)
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots.append(torch.cat([p.detach().reshape(-1).clone() for p in model.parameters() if p.requires_grad]))

    initial = torch.cat([p.detach().reshape(-1).clone() for p in trainer.model.parameters() if p.requires_grad])
    trainer.add_callback(Snapshot())
    trainer.add_callback(TrajectoryCallback(tmp_path))
    trainer.train()
    rows = read_trajectory(tmp_path / "trajectory.jsonl")
    before = [initial, *snapshots[:-1]]
    expected = [float((after - b).norm()) for b, after in zip(before, snapshots, strict=True)]
    assert [r["update_norm"] for r in rows] == pytest.approx(expected, rel=1e-4)
    assert min(expected) > 0


@pytest.mark.parametrize(  # unequal weights train for longer: the slow tier
    "weights",
    [(1.0, 1.0), pytest.param((0.34, 1.0), marks=pytest.mark.slow), pytest.param((1.3, 0.7), marks=pytest.mark.slow)],
)
def test_kto_mode_equals_trl_batch_by_batch(tiny_model_dir, primed_model_dir, tmp_path, feedback_dataset, weights):
    dw, uw = weights
    common = {"beta": 0.3, "desirable_weight": dw, "undesirable_weight": uw, "ref_dir": tiny_model_dir}
    ours = make_trainer(primed_model_dir, tmp_path / "ours", feedback_dataset, use_kto_s=False, **common)
    theirs = make_trainer(primed_model_dir, tmp_path / "trl", feedback_dataset, cls=KTOTrainer, **common)
    batches = list(ours.get_train_dataloader())
    compositions = {int(compat.labels(b).sum()) for b in batches}
    assert {0, 4} & compositions or len(compositions) > 1  # batches of different label mixes
    for batch in batches:
        results = []
        for trainer in (ours, theirs):
            trainer.model.train()
            trainer.model.zero_grad(set_to_none=True)
            trainer._metrics["train"].clear()
            loss = trainer.compute_loss(trainer.model, batch)
            loss.backward()
            results.append(
                (loss.detach(), {k: v[-1] for k, v in trainer._metrics["train"].items()}, flat_grads(trainer.model))
            )
        (loss_a, metrics_a, grads_a), (loss_b, metrics_b, grads_b) = results
        torch.testing.assert_close(loss_a, loss_b)
        torch.testing.assert_close(grads_a, grads_b, rtol=1e-4, atol=1e-6)
        assert {"kl"} <= metrics_a.keys() <= metrics_b.keys()
        for key, value in metrics_a.items():
            assert value == pytest.approx(metrics_b[key], rel=1e-4, abs=1e-5), key
    # the primed model puts more mass on every completion, mismatched pairs included: the KL reference point is
    # above zero (clamped at 0, so a broken estimate would read 0), where KTO and KTO-S differ
    assert ours._metrics["train"]["kl"][-1] > 0.01


@pytest.mark.skipif(not compat.KTO_LOSS_HOOK, reason="TRL >= 1.6 has no kto_loss to compare with")
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.34, 1.0), (1.3, 0.7)])
def test_kto_mode_equals_trl_kto_loss_on_random_logps(tiny_model_dir, tmp_path, feedback_dataset, weights) -> None:
    dw, uw = weights
    ours = make_trainer(
        tiny_model_dir,
        tmp_path / "a",
        feedback_dataset,
        use_kto_s=False,
        beta=0.2,
        desirable_weight=dw,
        undesirable_weight=uw,
    )
    trl = make_trainer(
        tiny_model_dir,
        tmp_path / "b",
        feedback_dataset,
        cls=KTOTrainer,
        beta=0.2,
        desirable_weight=dw,
        undesirable_weight=uw,
    )
    for seed, (nc, nr) in enumerate([(3, 5), (8, 0), (0, 8), (1, 1)]):
        g = torch.Generator().manual_seed(seed)
        policy = [-10 * torch.rand(n, generator=g) for n in (nc, nr, 8)]
        inputs = (*policy, *[p + 0.8 * torch.randn(p.shape, generator=g) for p in policy])
        for got, want in zip(ours.kto_loss(*inputs), trl.kto_loss(*inputs), strict=True):
            torch.testing.assert_close(got.reshape(-1), want.reshape(-1))


def test_kto_s_mode_uses_the_sign_corrected_reference_point(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    trainer = make_trainer(tiny_model_dir, tmp_path, feedback_dataset, use_kto_s=True, beta=0.2)
    chosen = torch.tensor([-1.0, -3.0])  # r = +2 and 0
    rejected = torch.tensor([-6.0])  # r = -1
    losses, _, _, kl = trainer.kto_loss(
        chosen,
        rejected,
        torch.tensor([-4.0, -4.0]),
        torch.tensor([-3.0, -3.0]),
        torch.tensor([-5.0]),
        torch.tensor([-5.0, -5.0]),
    )
    z0 = 1.0
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [1 - sig(0.2 * (2 + z0)), 1 - sig(0.0), 1 - sig(-0.2 * (-1 - z0))]
    assert kl.item() == pytest.approx(z0)
    torch.testing.assert_close(losses, torch.tensor(expected))


class BypassingTrainer(KTOSTrainer):
    """Routes the loss around KTOSTrainer.kto_loss, as a careless subclass or a TRL change could."""

    if compat.KTO_LOSS_HOOK:

        def kto_loss(self, *logps):
            return KTOTrainer.kto_loss(self, *logps)

    else:

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return KTOTrainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


@pytest.mark.slow
def test_a_bypassed_loss_stops_the_first_step(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    # loss_type "kto": TRL's own loss path can compute it (TRL knows no "kto_s"), so only the guard can stop it.
    trainer = make_trainer(
        tiny_model_dir, tmp_path, feedback_dataset, cls=BypassingTrainer, max_steps=3, loss_type="kto"
    )
    with pytest.raises(RuntimeError, match="did not come from KTOSTrainer.kto_loss"):
        trainer.train()
    assert trainer.state.global_step == 0


BYPASSES = [
    ({"use_liger_kernel": True}, "use_liger_kernel"),
    ({"train_sampling_strategy": "random"}, "train_sampling_strategy='random': .* shuffle the dataset once"),
]
if "sync_ref_model" in KTOConfig.__dataclass_fields__:
    BYPASSES.append(({"sync_ref_model": True}, "sync_ref_model"))


@pytest.mark.parametrize(("overrides", "named"), BYPASSES)
def test_configurations_that_bypass_the_loss_are_refused(tiny_model_dir, tmp_path, feedback_dataset, overrides, named):
    with pytest.raises(ValueError, match=f"cannot train through the ktos loss with {named}".replace("(", r"\(")):
        make_trainer(tiny_model_dir, tmp_path, feedback_dataset, **overrides)


def test_a_replacement_loss_function_is_refused(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    with pytest.raises(ValueError, match="compute_loss_func replaces the loss"):
        KTOSTrainer(
            model=model,
            args=KTOSConfig(output_dir=str(tmp_path), **FAST),
            train_dataset=feedback_dataset,
            processing_class=tokenizer,
            compute_loss_func=lambda *a, **k: 0.0,
        )


def test_labels_trl_accepts_are_coerced_to_bools() -> None:
    ds = Dataset.from_list([{"prompt": "a", "completion": "b", "label": v} for v in (1, 0, 1)])
    assert check_feedback(ds)["label"] == [True, False, True]
    ds = Dataset.from_dict({"prompt": ["a"] * 3, "completion": ["b"] * 3, "label": [1.0, 0.0, 1.0]})
    assert check_feedback(ds)["label"] == [True, False, True]


@pytest.mark.parametrize(
    ("labels", "first_bad"),
    [([1, 0, 2, 1], 2), (["no", "yes", "yes", "no"], 0), ([True, False, None, True], 2), ([1.0, 0.0, 0.5], 2)],
)
def test_bad_labels_raise_naming_column_and_rows(labels, first_bad) -> None:
    n = len(labels)
    ds = Dataset.from_dict({"prompt": ["a"] * n, "completion": ["b"] * n, "label": labels})
    with pytest.raises(
        DataValidationError, match=rf"column 'label': values that are not bool or 0/1 at rows \[{first_bad}"
    ) as err:
        check_feedback(ds)
    assert repr(ds["label"][first_bad]) in str(err.value)


@pytest.mark.parametrize(("breaks", "named"), BAD_DATA, ids=["no-completion", "none", "empty", "blank-prompt"])
def test_bad_data_is_refused_at_construction_naming_column_and_rows(tiny_model_dir, tmp_path, breaks, named) -> None:
    with pytest.raises(DataValidationError, match=re.escape(named)):
        make_trainer(tiny_model_dir, tmp_path, Dataset.from_list(breaks(feedback_rows(8, 4))))


def test_a_train_set_sorted_by_label_draws_a_warning_that_says_how_to_shuffle(tiny_model_dir, tmp_path, caplog) -> None:
    rows = feedback_rows(48, 36)
    with caplog.at_level(logging.WARNING, logger="ktos"):
        make_trainer(tiny_model_dir, tmp_path / "shuffled", Dataset.from_list(rows))
    assert "sorted by label" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="ktos"):
        make_trainer(tiny_model_dir, tmp_path / "sorted", Dataset.from_list(sorted(rows, key=lambda r: r["label"])))
    assert "12 consecutive batches of 4 rows (rows 0 to 47) hold one label each" in caplog.text
    assert "sorted by label" in caplog.text and "dataset.shuffle(seed=0)" in caplog.text


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
    trainer = run_steps(tiny_model_dir, tmp_path, feedback_dataset, 4, use_kto_s=use_kto_s, beta=0.2)
    rows = read_trajectory(tmp_path / "trajectory.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert math.isfinite(row["kl"]) and math.isfinite(row["loss"])
        assert {"rewards/chosen", "learning_rate", "grad_norm", "elapsed_s"} <= row.keys()
    assert trainer.loss_calls == 4


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
