"""Shared fixtures: offline, CPU, a tiny model directory and small binary-feedback datasets."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import math
import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset

from ktos.models import load_model_and_tokenizer, save_tiny
from ktos.rundir import COLUMNS
from ktos.runnames import METHODS


def feedback_rows(n: int, n_desirable: int, seed: int = 0) -> list[dict]:
    """Short arithmetic prompts; desirable rows carry the right sum, undesirable a wrong one."""
    rng = random.Random(seed)
    labels = [True] * n_desirable + [False] * (n - n_desirable)
    rng.shuffle(labels)
    rows = []
    for label in labels:
        a, b = rng.randrange(10, 50), rng.randrange(10, 50)
        answer = a + b if label else a + b + rng.choice([-3, -1, 1, 2, 10])
        rows.append({"prompt": f"Q: {a}+{b}=", "completion": f" {answer}", "label": label})
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama-architecture model and char-level tokenizer saved to disk (no download)."""
    return save_tiny(tmp_path_factory.mktemp("tiny-model"), seed=0)


def prime_model(model_dir: Path, out_dir: Path, *, steps: int = 2, lr: float = 3e-3) -> Path:
    """A copy of the model at ``model_dir`` trained briefly as a language model on feedback lines (AdamW).

    Trained against the original as reference, it puts more probability on every completion of the task,
    matched or mismatched: rewards ``r`` and the KL reference point ``z0`` are well above zero from the
    first step, where KTO and KTO-S differ.
    """
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    lines = [r["prompt"] + r["completion"] + tokenizer.eos_token for r in feedback_rows(64, 32, seed=7)]
    batch = tokenizer(lines, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    torch.manual_seed(0)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def primed_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`prime_model` of the tiny model: a policy whose reference is ``tiny_model_dir``."""
    return prime_model(tiny_model_dir, tmp_path_factory.mktemp("primed-model"))


@pytest.fixture
def feedback_dataset() -> Dataset:
    """48 rows, 3:1 desirable to undesirable."""
    return Dataset.from_list(feedback_rows(48, 36))


def trajectory_table(
    *, seeds=(0, 1, 2), lrs=(5e-6,), steps=25, diverged=None, kto_s_scale=1.0, probe=True, quality=True
) -> pd.DataFrame:
    """A tidy trajectory table: KTO's kl grows like t^2, KTO-S's stays near 0.01-0.04 (times
    ``kto_s_scale``); ``diverged = ((method, lr, seed), step)`` makes that run end in a blow-up."""
    rows = []
    for method in METHODS:
        for lr in lrs:
            for seed in seeds:
                status, last = "completed", steps
                if diverged and diverged[0] == (method, lr, seed):
                    status, last = "diverged", diverged[1]
                sign = 1 if method == "kto" else 0.5
                for t in range(1, last + 1):
                    if method == "kto":
                        kl = 0.002 * (lr / 5e-6) * t**2 * (1 + 0.1 * seed)
                    else:
                        kl = kto_s_scale * (0.01 + 0.001 * t * (1 + 0.1 * seed))
                    if status == "diverged" and t == last:
                        kl = 80.0
                    has_probe = probe and t % 5 == 0
                    measured = quality and status != "diverged"
                    rows.append({
                        "method": method, "lr": lr, "beta": 0.2, "seed": seed, "step": t, "kl": kl,
                        "probe_kl": 1.3 * kl if has_probe else math.nan,
                        "probe_kl_per_token": 1.3 * kl / 40 if has_probe else math.nan,
                        "loss": 0.5 - 0.004 * t * sign, "rewards_chosen": 0.01 * t * sign,
                        "rewards_rejected": -0.02 * t * sign if t % 7 else math.nan,
                        "rewards_margins": 0.03 * t * sign, "learning_rate": lr, "grad_norm": 1.0,
                        "elapsed_s": float(t), "status": status,
                        "quality_metric": "task_accuracy" if quality else math.nan,
                        "quality": 0.6 + 0.01 * seed + 0.02 * (method == "kto_s") if measured else math.nan,
                    })  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS))
