"""Shared fixtures: offline, CPU, a tiny model directory and small binary-feedback datasets."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset

from ktos.models import load_model_and_tokenizer
from ktos.study.rundir import COLUMNS
from ktos.toy.tiny import save_tiny


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


@pytest.fixture(autouse=True)
def isolated_logging() -> Iterator[None]:
    """Undo what ``ktos.cli.configure_logging`` leaves behind (verbosity variables, library and root log levels),
    so that no test's output depends on which test ran before it."""
    import datasets.utils.logging
    import transformers.utils.logging

    env = {k: os.environ.get(k) for k in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY")}
    libraries = (transformers.utils.logging, datasets.utils.logging)
    verbosity = [library.get_verbosity() for library in libraries]
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("ktos", "trl", "accelerate")}
    yield
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    for library, level in zip(libraries, verbosity, strict=True):
        library.set_verbosity(level)
    root.handlers[:], root.level = handlers, root_level
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


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
    *,
    regimes: tuple[str, ...] = ("main",),
    methods: tuple[str, ...] = ("kto", "kto_s"),
    lrs: tuple[float, ...] = (1e-4,),
    seeds: tuple[int, ...] = (0, 1, 2),
    steps: int = 60,
    beta: float = 0.2,
    kto_kl: float = 1.5,
    kto_s_kl: float = 0.04,
    diverged: tuple[tuple, int] | None = None,
    quality: bool = True,
    probe_every: int = 5,
) -> pd.DataFrame:
    """A synthetic tidy trajectory table with every column of :data:`ktos.study.rundir.COLUMNS`.

    Per run, with ``T`` its ``max_steps`` and ``g = 1 + 0.04 (seed - 1)`` a seed's gain:

    * KTO's probe KL is ``kto_kl * (lr / 1e-4) * (0.2 / beta) * g * (t / T)^2`` plus a wiggle of at most
      0.002 nats: quadratic, so it runs away by docs/study.md's rule whenever ``5/9`` of its final value
      exceeds 0.1 nats (the defaults: final 1.5, above 0.1 from step 16);
    * KTO-S's is ``kto_s_kl * (0.2 / beta) * g * t / T`` plus the same wiggle: below 0.05 nats throughout.

    The probe is measured at step 1, every ``probe_every``-th step and the last, with standard error
    ``0.005 + 0.05 |K|``; TRL's logged ``kl`` is ``0.9 K`` clamped at 0 at every step. ``regimes`` named
    ``{schedule}_s{steps}_b{beta}`` take their length and beta from the name, others ``steps`` and ``beta``.
    With ``quality``, base accuracy is 0.6 and the final (``quality``) and step-20 (``step_quality``)
    accuracy of KTO are 0.58 and 0.59, of KTO-S 0.62 and 0.61 (plus ``0.005 seed``), all within the
    stability criterion's floor; without, the task-metric columns are NaN. ``diverged = (key, step)`` with
    ``key`` ``(method, lr, seed)`` or ``(regime, method, lr, seed)`` makes that run stop at ``step`` with
    status ``diverged``, a non-finite loss and ``kl``, a probe KL of 50 nats there and no final accuracy.
    """
    rows = []
    for regime in regimes:
        parts = regime.split("_")  # a regime-search name: {schedule}_s{steps}_b{beta}
        named = len(parts) == 3 and parts[1][:1] == "s" and parts[2][:1] == "b"
        run_beta, run_steps = (float(parts[2][1:]), int(parts[1][1:])) if named else (beta, steps)
        for method in methods:
            for lr in lrs:
                for seed in seeds:
                    status, last = "completed", run_steps
                    if diverged is not None and diverged[0] in ((method, lr, seed), (regime, method, lr, seed)):
                        status, last = "diverged", diverged[1]
                    gain = 1 + 0.04 * (seed - 1)
                    if method == "kto":
                        end, power, q_end, q_20 = kto_kl * (lr / 1e-4) * (0.2 / run_beta), 2, 0.58, 0.59
                    else:
                        end, power, q_end, q_20 = kto_s_kl * (0.2 / run_beta), 1, 0.62, 0.61
                    for t in range(1, last + 1):
                        k = end * gain * (t / run_steps) ** power + 0.002 * math.sin(1.7 * t + seed)
                        blown = status == "diverged" and t == last
                        probed = t == 1 or t % probe_every == 0 or t == last
                        if blown:
                            k = 50.0
                        rows.append({
                            "regime": regime, "method": method, "lr": lr, "beta": run_beta, "seed": seed,
                            "max_steps": run_steps, "step": t,
                            "kl": math.nan if blown else max(0.0, 0.9 * k),
                            "probe_kl": k if probed else math.nan,
                            "probe_kl_se": 0.005 + 0.05 * abs(k) if probed else math.nan,
                            "probe_kl_per_token": k / 40 if probed else math.nan,
                            "step_quality": q_20 + 0.005 * seed if quality and t == 20 else math.nan,
                            "loss": math.nan if blown else 0.5 - 0.003 * t * (1 if method == "kto" else 0.5),
                            "rewards_chosen": 0.01 * t, "rewards_rejected": -0.02 * t if t % 7 else math.nan,
                            "rewards_margins": 0.03 * t, "learning_rate": lr, "grad_norm": 1.0 + 0.01 * seed,
                            "elapsed_s": float(t), "status": status,
                            "quality_metric": "task_accuracy" if quality else math.nan,
                            "quality": q_end + 0.005 * seed if quality and status != "diverged" else math.nan,
                            "base_quality": 0.6 if quality else math.nan,
                        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS))
