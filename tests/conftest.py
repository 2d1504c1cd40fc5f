"""Shared fixtures and builders: offline, CPU, a tiny model directory, small binary-feedback datasets (and broken
ones), trainers on them, and an independent implementation of KTO, KTO-S and KTO-zero's loss and gradients."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from ktos import KTOSConfig, KTOSTrainer, compat
from ktos.compat import KTOConfig
from ktos.models import load_model_and_tokenizer
from ktos.study.readings.rundir import COLUMNS
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
    """A synthetic tidy trajectory table with every column of :data:`ktos.study.readings.rundir.COLUMNS`.

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


# ----------------------------------------------------------------- trainers on the tiny model


FAST = {
    "per_device_train_batch_size": 4,
    "max_length": 32,
    "gradient_checkpointing": False,
    "save_strategy": "no",
    "disable_tqdm": True,
    "learning_rate": 1e-3,
    "report_to": "none",
}


def make_trainer(model_dir: Path, tmp: Path, data: Dataset, cls=KTOSTrainer, ref_dir: Path | None = None, **overrides):
    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    ref_model = load_model_and_tokenizer(str(ref_dir))[0] if ref_dir else None
    fields = {**FAST, **overrides}
    if issubclass(cls, KTOSTrainer):
        args = KTOSConfig(output_dir=str(tmp), **fields)
    else:
        fields = {k: v for k, v in fields.items() if k != "use_kto_s"}
        args = KTOConfig(output_dir=str(tmp), use_cpu=True, bf16=False, logging_steps=1, **fields)
    return cls(model=model, ref_model=ref_model, args=args, train_dataset=data, processing_class=tokenizer)


# ----------------------------------------------------------------- an independent implementation of both losses


def summed_logps(
    model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    token_logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (token_logps * mask[:, 1:]).sum(-1)


def expected_loss(policy, reference, batch, *, beta, dw, uw, sign_correction: bool, zero: bool = False) -> torch.Tensor:
    """Mean over the batch of w * (1 - sigmoid(beta * s * (r - point))), point = z0 (KTO), -sign(r) z0 (KTO-S) or
    0 (KTO-zero, ktos' former reference_point="zero")."""
    matched, mismatched = compat.sequence(batch, "completion"), compat.sequence(batch, "KL")
    r_policy = summed_logps(policy, *matched)
    with torch.no_grad():
        z0 = (summed_logps(policy, *mismatched) - summed_logps(reference, *mismatched)).mean().clamp(min=0)
        r_reference = summed_logps(reference, *matched)
    r = r_policy - r_reference
    point = -torch.sign(r.detach()) * z0 if sign_correction else z0
    point = torch.zeros_like(r) if zero else point
    desirable = compat.labels(batch)
    s = torch.where(desirable, 1.0, -1.0)
    w = torch.where(desirable, dw, uw)
    return (w * (1 - torch.sigmoid(beta * s * (r - point)))).mean()


def flat_grads(model: torch.nn.Module) -> torch.Tensor:
    """Every trainable parameter's gradient, flattened (zeros where none reached it)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def expected_grads(policy, reference, batch, **loss_kwargs) -> torch.Tensor:
    """The gradient of :func:`expected_loss` at the policy's current weights; its own gradients are kept."""
    params = [p for p in policy.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    expected_loss(policy, reference, batch, **loss_kwargs).backward()
    grads = flat_grads(policy)
    for p, g in zip(params, saved, strict=True):
        p.grad = g
    return grads


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class GradientAudit(TrainerCallback):
    """Before each optimizer step, compares the accumulated gradients with both losses' on that step's batch."""

    def __init__(self, batches: list[dict], reference: torch.nn.Module, **loss_kwargs) -> None:
        self.batches, self.reference, self.loss_kwargs = batches, reference, loss_kwargs
        self.rows: list[dict[str, float]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        batch = self.batches[state.global_step]
        observed = flat_grads(model)
        want = {
            s: expected_grads(model, self.reference, batch, sign_correction=s, **self.loss_kwargs)
            for s in (False, True)
        }
        self.rows.append({
            "to_kto": relative(observed, want[False]),
            "to_kto_s": relative(observed, want[True]),
            "gap": relative(want[True], want[False]),
        })  # fmt: skip


# ----------------------------------------------------------------- broken feedback


def without_completion(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "completion"} for row in rows]


def with_value(column: str, rows_at: tuple[int, ...], value) -> Callable[[list[dict]], list[dict]]:
    return lambda rows: [{**row, column: value} if i in rows_at else row for i, row in enumerate(rows)]


#: Broken feedback: how to break 8 rows, and what the error names.
BAD_DATA = [
    (without_completion, "train dataset: missing column 'completion'"),
    (with_value("completion", (3,), None), "column 'completion': empty, null or non-text values at rows [3]"),
    (with_value("completion", (2, 5), ""), "column 'completion': empty, null or non-text values at rows [2, 5]"),
    (with_value("prompt", (0,), "  "), "column 'prompt': empty, null or non-text values at rows [0]"),
]
