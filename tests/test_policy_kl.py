"""The policy KL (ktos.policy_kl): zero at the reference, never negative, unbiased for the exact sequence KL (by
enumeration on a tiny vocabulary), free of global RNG draws, and on by one config field."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from conftest import feedback_rows, make_trainer
from datasets import Dataset
from test_tracking import tensorboard_run

from ktos import KTOSConfig, KTOSTrainer
from ktos.models import load_model_and_tokenizer
from ktos.policy_kl import PolicyKL, heldout_prompts
from ktos.toy.tiny import build_tiny_model, build_tiny_tokenizer


def test_policy_kl_is_zero_before_training(tiny_model_dir, tmp_path) -> None:
    trainer = make_trainer(tiny_model_dir, tmp_path, Dataset.from_list(feedback_rows(16, 8)), kl_probe_size=0)
    prompts = heldout_prompts(Dataset.from_list(feedback_rows(8, 4, seed=2)), 8)
    rng = torch.get_rng_state()
    measured = PolicyKL(trainer, prompts, max_new_tokens=8, seed=0).measure()
    assert torch.equal(torch.get_rng_state(), rng)  # no draw from the global generator
    assert abs(measured["policy_kl"]) < 1e-6
    assert measured["policy_kl_tokens"] >= 1


def test_policy_kl_is_never_negative_and_the_training_is_unchanged(tiny_model_dir, tmp_path) -> None:
    # The same run with the policy KL on and off: identical loss, kl and probe_kl at every step (exact equality),
    # so the sampler draws nothing from the global RNG and changes no step; every logged policy_kl is >= 0. The
    # attention dropout makes every training step draw from the global RNG, so a draw by the sampler would show.
    train = Dataset.from_list(feedback_rows(24, 12))
    held = Dataset.from_list(feedback_rows(12, 6, seed=1))
    histories = {}
    for size in (0, 6):
        model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
        for module in model.modules():
            if hasattr(module, "attention_dropout"):
                module.attention_dropout = 0.1
        args = KTOSConfig(
            output_dir=str(tmp_path / str(size)), policy_kl_size=size, policy_kl_steps=2, policy_kl_max_new_tokens=6,
            kl_probe_size=8, max_steps=4, per_device_train_batch_size=4, max_length=32, learning_rate=1e-2,
            gradient_checkpointing=False, save_strategy="no", disable_tqdm=True, report_to="none", seed=3,
        )  # fmt: skip
        trainer = KTOSTrainer(
            model=model, args=args, processing_class=tokenizer, train_dataset=train, eval_dataset=held
        )  # fmt: skip
        trainer.train()
        histories[size] = [e for e in trainer.state.log_history if "loss" in e]
        if size:
            kls, _ = trainer.policy_kl.sequence_kls()
            assert float(kls.min()) >= -1e-6
    off, on = histories[0], histories[6]
    for key in ("loss", "kl", "probe_kl"):
        assert [e[key] for e in on] == [e[key] for e in off], key
    logged = {e["step"]: e["policy_kl"] for e in on if "policy_kl" in e}
    assert sorted(logged) == [1, 2, 4]
    assert all(v >= 0 for v in logged.values())
    assert max(logged.values()) > 1e-4  # the policy moved: the values have content
    assert not any("policy_kl" in e for e in off)


def tiny_pair(seed: int = 0) -> tuple:
    """A tokenizer over "ab" (6 ids with the specials), a tiny model as reference and a perturbed copy as policy."""
    tokenizer = build_tiny_tokenizer("ab")
    reference = build_tiny_model(tokenizer, hidden_size=16, num_layers=1, num_heads=2, seed=seed)
    policy = copy.deepcopy(reference)
    noise = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=noise) * 0.5)
    return tokenizer, policy, reference


def exact_sequence_kl(policy, reference, prompt_ids: list[int], eos: int, vocab: int, length: int) -> float:
    """KL(pi || ref) over every continuation of at most ``length`` tokens (ending early at EOS), by enumeration."""

    def logprobs(model, ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)

    total = 0.0
    seen = set()
    for continuation in itertools.product(range(vocab), repeat=length):
        if eos in continuation:
            continuation = continuation[: continuation.index(eos) + 1]
        if continuation in seen:
            continue
        seen.add(continuation)
        logp = logq = 0.0
        for t, token in enumerate(continuation):
            prefix = prompt_ids + list(continuation[:t])
            logp += float(logprobs(policy, prefix)[token])
            logq += float(logprobs(reference, prefix)[token])
        total += math.exp(logp) * (logp - logq)
    return total


def test_policy_kl_is_unbiased_for_the_enumerated_sequence_kl(tmp_path) -> None:
    tokenizer, policy, reference = tiny_pair()
    rows = [{"prompt": "ab", "completion": "ba", "label": True}, {"prompt": "ba", "completion": "a", "label": False}]
    args = KTOSConfig(
        output_dir=str(tmp_path), kl_probe_size=0, per_device_train_batch_size=2, max_length=16,
        gradient_checkpointing=False, save_strategy="no", disable_tqdm=True, report_to="none",
    )  # fmt: skip
    trainer = KTOSTrainer(
        model=policy, ref_model=reference, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(rows)
    )  # fmt: skip
    n = 400
    measurer = PolicyKL(trainer, ["ab"] * n, max_new_tokens=2, seed=0, batch_size=100)
    kls, lengths = measurer.sequence_kls()
    prompt_ids = list(tokenizer(text="ab")["input_ids"])
    exact = exact_sequence_kl(policy, reference, prompt_ids, tokenizer.eos_token_id, len(tokenizer), 2)
    se = float(kls.std()) / n**0.5
    assert exact > 0.05  # the perturbation is real
    assert float(kls.min()) >= -1e-6
    assert set(lengths.tolist()) <= {1, 2}
    assert abs(float(kls.mean()) - exact) < 3 * se, (float(kls.mean()), exact, se)


def test_the_config_alone_logs_the_policy_kl_to_tensorboard(tiny_model_dir, tmp_path) -> None:
    _, scalars = tensorboard_run(
        tiny_model_dir,
        tmp_path,
        (16, 8),
        policy_kl_size=4,
        policy_kl_steps=2,
        policy_kl_max_new_tokens=4,
        kl_probe_size=0,
        max_steps=2,
    )
    assert sorted(scalars["train/policy_kl"]) == [1, 2]
    assert "train/policy_kl_se" in scalars


def test_asking_for_the_policy_kl_without_held_out_data_is_an_error(tiny_model_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="kl_probe_dataset or eval_dataset"):
        make_trainer(tiny_model_dir, tmp_path, Dataset.from_list(feedback_rows(16, 8)), policy_kl_size=4)


@pytest.mark.parametrize(
    "field", [{"policy_kl_size": -1}, {"policy_kl_steps": 0}, {"policy_kl_max_new_tokens": 0}]
)  # fmt: skip
def test_policy_kl_fields_are_validated(tmp_path, field) -> None:
    with pytest.raises(ValueError, match="policy_kl"):
        KTOSConfig(output_dir=str(tmp_path), **field)
