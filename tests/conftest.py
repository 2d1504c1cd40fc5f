"""Shared fixtures: offline, CPU, a tiny model directory and small binary-feedback datasets."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import random
from pathlib import Path

import pytest
from datasets import Dataset

from ktos.models import save_tiny


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


@pytest.fixture
def feedback_dataset() -> Dataset:
    """48 rows, 3:1 desirable to undesirable."""
    return Dataset.from_list(feedback_rows(48, 36))
