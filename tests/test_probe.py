"""The KL probe and preference accuracy on the installed TRL, against an independent computation."""

from __future__ import annotations

import pytest
import torch
from conftest import feedback_rows, make_trainer
from datasets import Dataset

from ktos.models import load_model_and_tokenizer
from ktos.probe import KLProbe
from ktos.runs.quality import PreferenceAccuracy


def completion_logp(model, tokenizer, prompt: str, completion: str) -> float:
    """log p(completion + EOS | prompt), summed over those tokens (the tiny tokenizer is prefix-stable)."""
    n_prompt = len(tokenizer(prompt)["input_ids"])
    ids = torch.tensor([tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    token_logps = logps.gather(-1, ids[0, 1:, None]).squeeze(-1)
    return float(token_logps[n_prompt - 1 :].sum())


def mismatched_pairs(rows: list[dict], batch_size: int) -> list[tuple[str, str]]:
    """TRL's KL pairs: within each chunk of ``batch_size`` rows, each prompt gets the previous row's completion."""
    pairs = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        pairs += [(row["prompt"], chunk[i - 1]["completion"]) for i, row in enumerate(chunk)]
    return pairs


def test_probe_kl_is_the_mean_log_ratio_on_trls_mismatched_pairs(tiny_model_dir, primed_model_dir, tmp_path) -> None:
    rows = feedback_rows(12, 6, seed=3)
    trainer = make_trainer(primed_model_dir, tmp_path, Dataset.from_list(feedback_rows(16, 8)), ref_dir=tiny_model_dir)
    probe = KLProbe(trainer, Dataset.from_list(rows), size=10)
    measured = probe.measure()
    policy, tokenizer = load_model_and_tokenizer(str(primed_model_dir))
    reference = load_model_and_tokenizer(str(tiny_model_dir))[0]
    pairs = mismatched_pairs(rows[:10], batch_size=4)
    diffs = [completion_logp(policy, tokenizer, *p) - completion_logp(reference, tokenizer, *p) for p in pairs]
    n_tokens = sum(len(tokenizer(c + tokenizer.eos_token)["input_ids"]) for _, c in pairs)
    assert probe.n_pairs == 10
    assert measured["probe_kl"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-4)
    assert measured["probe_kl_per_token"] == pytest.approx(sum(diffs) / n_tokens, rel=1e-4)
    assert measured["probe_kl"] > 0.5  # the primed policy really moved: the check has something to compare


def test_probe_is_zero_before_training(tiny_model_dir, tmp_path) -> None:
    trainer = make_trainer(tiny_model_dir, tmp_path, Dataset.from_list(feedback_rows(16, 8)))
    measured = KLProbe(trainer, Dataset.from_list(feedback_rows(8, 4, seed=2)), size=8).measure()
    assert measured["probe_kl"] == pytest.approx(0.0, abs=1e-5)


def test_preference_accuracy_reads_the_sign_of_the_implied_reward(tiny_model_dir, primed_model_dir, tmp_path) -> None:
    # The primed policy raises every completion's log-probability (r > 0 throughout): desirable rows count as
    # right, undesirable ones as wrong, so the accuracy is the share of desirable rows.
    trainer = make_trainer(primed_model_dir, tmp_path, Dataset.from_list(feedback_rows(16, 8)), ref_dir=tiny_model_dir)
    result = PreferenceAccuracy(trainer, Dataset.from_list(feedback_rows(12, 9, seed=5))).measure()
    assert result == {"metric": "preference_accuracy", "value": 0.75, "n": 12}
