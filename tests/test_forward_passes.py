"""Fused forward passes (``KTOSConfig.fuse_forward_passes``) against TRL's own KTOTrainer, on the installed TRL.

The fused reference call (completions and KL pairs stacked in one call) must leave everything TRL computes
unchanged: loss, logged ``kl``, rewards, log-probs, the metric keys and the gradients. Models run in float64,
so that the only difference, the floating-point order of a batch of another shape, stays near 1e-15 and a
tolerance of 1e-9 would still see a single wrong row. The tests also count the model calls, so that a
configuration that silently stopped fusing would fail. And on TRL >= 1.6 the hooked loss path passes the
collator's extra model inputs (``token_type_ids``) and logs TRL's metric keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import flat_grads, make_trainer, summed_logps
from datasets import Dataset

from ktos import compat
from ktos.compat import KTOTrainer, stack_rows

TIGHT = {"rtol": 1e-9, "atol": 1e-9}


class CallLog:
    """Counts a module's calls and records each call's input rows and keyword inputs."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: list[dict] = []
        module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls.append({"rows": ids.size(0), "keys": frozenset(kwargs) - {"input_ids"}})

    def take(self) -> list[dict]:
        calls, self.calls = self.calls, []
        return calls


def float64_trainer(model_dir: Path, tmp: Path, data: Dataset, **overrides):
    """:func:`test_trainer.make_trainer` with the policy and reference in float64."""
    trainer = make_trainer(model_dir, tmp, data, **overrides)
    for model in (trainer.model, trainer.ref_model):
        model.to(torch.float64)
    return trainer


class CapturedLogps:
    """Wraps a trainer's ``kto_loss`` (``KTOSTrainer``'s, or TRL < 1.6's) to keep the six log-prob tensors of its
    last call."""

    def __init__(self, trainer) -> None:
        self.inputs: tuple[torch.Tensor, ...] = ()
        original = trainer.kto_loss

        def kto_loss(*logps):
            self.inputs = tuple(t.detach() for t in logps)
            return original(*logps)

        trainer.kto_loss = kto_loss


def independent_logps(policy, reference, batch) -> tuple[torch.Tensor, ...]:
    """The six log-prob tensors of TRL's ``kto_loss`` signature, from :func:`test_trainer.summed_logps`."""
    chosen = compat.labels(batch)
    with torch.no_grad():
        matched = {m: summed_logps(m, *compat.sequence(batch, "completion")) for m in (policy, reference)}
        mismatched = {m: summed_logps(m, *compat.sequence(batch, "KL")) for m in (policy, reference)}
    return (matched[policy][chosen], matched[policy][~chosen], mismatched[policy],
            matched[reference][chosen], matched[reference][~chosen], mismatched[reference])  # fmt: skip


def step(trainer, batch, *, train: bool = True) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
    """One ``compute_loss`` on ``batch``: the loss, the metrics it recorded and (training) the gradients."""
    mode = "train" if train else "eval"
    trainer.model.train(train)
    trainer.model.zero_grad(set_to_none=True)
    trainer._metrics[mode].clear()
    with torch.set_grad_enabled(train):
        loss = trainer.compute_loss(trainer.model, batch)
    grads = None
    if train:
        loss.backward()
        grads = flat_grads(trainer.model)
    return loss.detach(), {k: v[-1] for k, v in trainer._metrics[mode].items()}, grads


def test_stack_rows_pads_each_row_set_on_the_right() -> None:
    first = (torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 0]]))
    second = (torch.tensor([[8, 9], [3, 4]]), torch.tensor([[1, 1], [1, 0]]))
    ids, mask = stack_rows(first, second, (-1, 0))
    assert ids.tolist() == [[5, 6, 7], [8, 9, -1], [3, 4, -1]]
    assert mask.tolist() == [[1, 1, 0], [1, 1, 0], [1, 0, 0]]


@pytest.mark.slow
@pytest.mark.parametrize("fuse", [False, True], ids=["two_calls", "fused"])
def test_training_steps_equal_trl_with_the_reference_call_fused(
    tiny_model_dir, primed_model_dir, tmp_path, feedback_dataset, fuse
) -> None:
    common = {"beta": 0.3, "desirable_weight": 1.3, "undesirable_weight": 0.7, "ref_dir": tiny_model_dir}
    ours = float64_trainer(primed_model_dir, tmp_path / "ours", feedback_dataset, use_kto_s=False,
                           fuse_forward_passes=fuse, **common)  # fmt: skip
    theirs = float64_trainer(primed_model_dir, tmp_path / "trl", feedback_dataset, cls=KTOTrainer, **common)
    captured = CapturedLogps(ours)
    captured_trl = CapturedLogps(theirs) if compat.KTO_LOSS_HOOK else None
    reference_calls = {"ours": CallLog(ours.ref_model), "trl": CallLog(theirs.ref_model)}
    batches = list(ours.get_train_dataloader())
    assert len({int(compat.labels(b).sum()) for b in batches}) > 1  # batches of different label mixes
    for batch in batches:
        for log in reference_calls.values():
            log.take()  # forget the independent computation's calls
        loss_a, metrics_a, grads_a = step(ours, batch)
        loss_b, metrics_b, grads_b = step(theirs, batch)
        rows = len(batch["label"])
        assert [c["rows"] for c in reference_calls["trl"].take()] == [rows, rows]
        assert [c["rows"] for c in reference_calls["ours"].take()] == ([2 * rows] if fuse else [rows, rows])
        torch.testing.assert_close(loss_a, loss_b, **TIGHT)
        torch.testing.assert_close(grads_a, grads_b, **TIGHT)
        assert metrics_a.keys() == metrics_b.keys()
        assert "kl" in metrics_a and any(k.startswith("rewards/") for k in metrics_a)  # TRL < 1.6 stores sums
        for key, value in metrics_a.items():
            assert value == pytest.approx(metrics_b[key], rel=1e-9, abs=1e-9), key
        # Per-row log-probs: against an independent computation (in float32, which test_trainer.summed_logps
        # casts the logits to: about 1e-7 relative per token), and on TRL < 1.6 against TRL's kto_loss inputs.
        for got, want in zip(captured.inputs, independent_logps(ours.model, ours.ref_model, batch), strict=True):
            torch.testing.assert_close(got.float(), want, rtol=1e-6, atol=1e-6)
        if captured_trl is not None:
            for got, want in zip(captured.inputs, captured_trl.inputs, strict=True):
                torch.testing.assert_close(got, want, **TIGHT)


def test_evaluation_equals_trl_with_fused_calls(tiny_model_dir, primed_model_dir, tmp_path, feedback_dataset) -> None:
    # Without gradients every pair of calls fuses: one policy call and one reference call per batch.
    common = {"beta": 0.2, "ref_dir": tiny_model_dir}
    ours = float64_trainer(primed_model_dir, tmp_path / "ours", feedback_dataset, use_kto_s=False,
                           fuse_forward_passes=True, **common)  # fmt: skip
    theirs = float64_trainer(primed_model_dir, tmp_path / "trl", feedback_dataset, cls=KTOTrainer, **common)
    policy_calls = CallLog(ours.model)
    for batch in list(ours.get_train_dataloader())[:3]:
        loss_a, metrics_a, _ = step(ours, batch, train=False)
        loss_b, metrics_b, _ = step(theirs, batch, train=False)
        torch.testing.assert_close(loss_a, loss_b, **TIGHT)
        assert metrics_a.keys() == metrics_b.keys()
        for key, value in metrics_a.items():
            assert value == pytest.approx(metrics_b[key], rel=1e-9, abs=1e-9), key
        assert [c["rows"] for c in policy_calls.take()] == [2 * len(batch["label"])]


@pytest.mark.skipif(compat.KTO_LOSS_HOOK, reason="TRL < 1.6 runs its own forward passes (ids and attention mask only)")
@pytest.mark.parametrize("fuse", [False, True], ids=["two_calls", "fused"])
def test_hooked_path_passes_trls_model_inputs(tiny_model_dir, tmp_path, feedback_dataset, fuse) -> None:
    # The collator's per-token extras (token_type_ids, and the KL rows' own) reach every call as TRL passes them.
    ours = make_trainer(tiny_model_dir, tmp_path / "ours", feedback_dataset, use_kto_s=False, ref_dir=tiny_model_dir,
                        fuse_forward_passes=fuse)  # fmt: skip
    theirs = make_trainer(tiny_model_dir, tmp_path / "trl", feedback_dataset, cls=KTOTrainer, ref_dir=tiny_model_dir)
    batch = next(iter(ours.get_train_dataloader()))
    ids, kl_ids = compat.sequence(batch, "completion")[0], compat.sequence(batch, "KL")[0]
    batch = {**batch, "token_type_ids": torch.zeros_like(ids), "KL_token_type_ids": torch.ones_like(kl_ids)}
    seen: dict[str, list[tuple]] = {"ours": [], "trl": []}

    def record(name: str):
        def hook(module, args, kwargs):
            extra = kwargs["token_type_ids"]
            seen[name].append((frozenset(kwargs), extra.shape == kwargs["input_ids"].shape, bool(extra.any())))
            return args, {k: v for k, v in kwargs.items() if k != "token_type_ids"}  # Llama takes none

        return hook

    for name, trainer in (("ours", ours), ("trl", theirs)):
        for model in (trainer.model, trainer.ref_model):
            model.register_forward_pre_hook(record(name), with_kwargs=True)
        step(trainer, batch)
    assert {keys for keys, *_ in seen["ours"]} == {keys for keys, *_ in seen["trl"]}
    assert all(aligned for _, aligned, _ in seen["ours"])
    kl_marked = [marked for *_, marked in seen["ours"]]
    assert (kl_marked == [True, False, True]) if fuse else (kl_marked == [True, False, True, False])


def test_logged_metric_keys_are_trls(tiny_model_dir, tmp_path, feedback_dataset) -> None:
    # What reaches log_history (and so every report_to tracker) after two training steps: TRL's keys, no fewer, and
    # ktos's update norm.
    logged = {}
    for name, cls, extra in (("ours", None, {"use_kto_s": True, "fuse_forward_passes": True}), ("trl", KTOTrainer, {})):
        kwargs = {"cls": cls} if cls else {}
        trainer = make_trainer(tiny_model_dir, tmp_path / name, feedback_dataset, ref_dir=tiny_model_dir, max_steps=2,
                               **kwargs, **extra)  # fmt: skip
        trainer.train()
        logged[name] = {key for row in trainer.state.log_history[:-1] for key in row}
    assert {"kl", "rewards/chosen", "logps/chosen"} <= logged["trl"]
    assert logged["ours"] == logged["trl"] | {"update_norm"}
