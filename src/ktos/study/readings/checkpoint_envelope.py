r"""Is a method more than a smaller step? Two readings over whole trajectories (docs/study.md).

The data: for each method ``m``, learning rate, seed and checkpoint step ``s`` (every step where task
accuracy was measured, and the end), the probe KL ``K`` (sequence-level nats) and the greedy task accuracy
on the whole held-out set and on its two halves (``val``: even items, for choosing; ``test``: odd items,
for reporting). A *checkpoint* ``c = (lr, s)`` of a method has the seed means ``K_c`` and ``A_c``.

* **Envelope** (:func:`envelope_table`): a method's best accuracy within a KL budget ``k``,
  ``E_m(k) = max {A_c : K_c <= k}`` over all its checkpoints, the base model included (``K = 0``), at the
  budgets :data:`KL_BUDGETS`. A method that is only a smaller step traces the same envelope as KTO; a better
  method lies above it. The difference with KTO gets a 95% interval from a seed bootstrap (2,000 resamples
  of the seed set, the same for every method, every mean and maximum recomputed).
* **Early stopping** (:func:`early_stopping_table`): each method's checkpoint with the highest mean
  validation-half accuracy over the trained checkpoints (ties: smaller learning rate, then earlier step) is
  the one it would ship; its test-half accuracy is reported, and KTO-S and KTO-zero are compared with KTO,
  paired by seed (t-interval), and by a seed bootstrap that repeats the choice in every resample.

An end-of-training checkpoint below the base model is never the basis of "worse": both readings choose
among all checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...loss_types import KTO, KTO_S, KTO_ZERO
from .stats import N_BOOT, t_interval

#: KL budgets (sequence-level nats) at which the envelopes are compared.
KL_BUDGETS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
#: Columns of :func:`envelope_table` and :func:`early_stopping_table` (their header when a study has neither).
ENVELOPE_COLUMNS = ("method", "kl_budget", "envelope", "envelope_low", "envelope_high", "lr", "step", "diff_vs_kto",
                    "diff_low", "diff_high", "n_seeds")  # fmt: skip
EARLY_STOPPING_COLUMNS = ("method", "lr", "step", "val_accuracy", "test_accuracy", "test_low", "test_high",
                          "base_test_accuracy", "diff_vs_kto", "diff_low", "diff_high", "boot_diff_low",
                          "boot_diff_high", "n_seeds")  # fmt: skip


@dataclass
class Checkpoints:
    """Arrays indexed ``[method, lr, step, seed]`` (NaN where missing) with their axes: probe KL and accuracy
    (whole held-out set, validation half, test half), and the base model's accuracies."""

    methods: list[str]
    lrs: np.ndarray
    steps: np.ndarray
    seeds: np.ndarray
    kl: np.ndarray
    acc: np.ndarray
    val: np.ndarray
    test: np.ndarray
    base: dict[str, float]


def _final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's last step with its end-of-training accuracies (run-level columns) as step accuracies."""
    last = df.loc[df.groupby(["method", "lr", "seed"])["step"].idxmax()].copy()
    last["step_quality"] = last["quality"]
    last["step_quality_val"] = last["quality_val"]
    last["step_quality_test"] = last["quality_test"]
    return last


def checkpoints(df: pd.DataFrame, regime: str) -> Checkpoints | None:
    """The checkpoints of ``regime``'s completed runs, or ``None`` when it has no validation/test accuracies."""
    sub = df[(df["regime"] == regime) & (df["status"] == "completed")]
    if sub.empty or not np.isfinite(sub["step_quality_val"].astype(float)).any():
        return None
    rows = pd.concat([sub[np.isfinite(sub["step_quality_val"].astype(float))], _final_rows(sub)])
    rows = rows[np.isfinite(rows["probe_kl"].astype(float))].drop_duplicates(["method", "lr", "seed", "step"])
    methods = [m for m in (KTO, KTO_S, KTO_ZERO) if m in set(rows["method"])]
    lrs, steps, seeds = (np.sort(rows[c].unique()) for c in ("lr", "step", "seed"))
    shape = (len(methods), len(lrs), len(steps), len(seeds))
    arrays = {name: np.full(shape, np.nan) for name in ("kl", "acc", "val", "test")}
    index = [rows["method"].map(methods.index), np.searchsorted(lrs, rows["lr"]),
             np.searchsorted(steps, rows["step"]), np.searchsorted(seeds, rows["seed"])]  # fmt: skip
    for name, col in (
        ("kl", "probe_kl"),
        ("acc", "step_quality"),
        ("val", "step_quality_val"),
        ("test", "step_quality_test"),
    ):
        arrays[name][tuple(np.asarray(i) for i in index)] = rows[col].to_numpy(float)
    base = {h: float(sub[f"base_quality{s}"].iloc[0]) for h, s in (("acc", ""), ("val", "_val"), ("test", "_test"))}
    return Checkpoints(methods, lrs, steps, seeds, **arrays, base=base)


def _envelopes(cp: Checkpoints, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(E[method, budget], arg[method, budget])`` for the seed resample ``seeds`` (indices): the best mean
    accuracy among checkpoints whose mean KL is within each budget (the base model at KL 0 included), and the
    flat index (lr, step) of the checkpoint that attains it (-1: the base model)."""
    kl = np.nanmean(cp.kl[..., seeds], axis=-1).reshape(len(cp.methods), -1)
    acc = np.nanmean(cp.acc[..., seeds], axis=-1).reshape(len(cp.methods), -1)
    budgets = np.asarray(KL_BUDGETS)
    inside = kl[:, None, :] <= budgets[None, :, None]
    masked = np.where(inside & np.isfinite(acc[:, None, :]), acc[:, None, :], -np.inf)
    arg = masked.argmax(-1)
    best = np.take_along_axis(masked, arg[..., None], -1)[..., 0]
    use_base = best < cp.base["acc"]
    return np.where(use_base, cp.base["acc"], best), np.where(use_base, -1, arg)


def envelope_table(cp: Checkpoints, *, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per method and KL budget: the envelope with its bootstrap interval, the checkpoint attaining it, and the
    difference from KTO's envelope with its bootstrap interval."""
    all_seeds = np.arange(len(cp.seeds))
    env, arg = _envelopes(cp, all_seeds)
    rng = np.random.default_rng(seed)
    boots = np.stack([_envelopes(cp, rng.choice(all_seeds, len(all_seeds)))[0] for _ in range(n_boot)])
    k = cp.methods.index(KTO) if KTO in cp.methods else None
    rows = []
    for i, method in enumerate(cp.methods):
        for j, budget in enumerate(KL_BUDGETS):
            lr_i, step_i = divmod(int(arg[i, j]), len(cp.steps)) if arg[i, j] >= 0 else (None, None)
            diff = boots[:, i, j] - boots[:, k, j] if k is not None else np.full(n_boot, np.nan)
            rows.append({
                "method": method, "kl_budget": budget, "envelope": env[i, j],
                "envelope_low": np.quantile(boots[:, i, j], 0.025), "envelope_high": np.quantile(boots[:, i, j], 0.975),
                "lr": cp.lrs[lr_i] if lr_i is not None else math.nan,
                "step": cp.steps[step_i] if step_i is not None else 0,
                "diff_vs_kto": env[i, j] - env[k, j] if k is not None else math.nan,
                "diff_low": np.quantile(diff, 0.025), "diff_high": np.quantile(diff, 0.975),
                "n_seeds": len(cp.seeds),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=ENVELOPE_COLUMNS)


def _choose(cp: Checkpoints, seeds: np.ndarray) -> np.ndarray:
    """Per method, the flat (lr, step) index of the trained checkpoint with the highest mean validation accuracy
    over ``seeds`` (``argmax`` takes the first: smaller learning rate, then earlier step)."""
    val = np.nanmean(cp.val[..., seeds], axis=-1).reshape(len(cp.methods), -1)
    return np.where(np.isfinite(val), val, -np.inf).argmax(-1)


def early_stopping_table(cp: Checkpoints, *, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per method: the chosen checkpoint (lr, step), its mean validation and test accuracy with the test
    accuracy's t-interval, the base model's test accuracy, and the test-accuracy difference from KTO, paired by
    seed (t-interval) and by a bootstrap that repeats the choice."""
    all_seeds = np.arange(len(cp.seeds))
    chosen = _choose(cp, all_seeds)
    test = cp.test.reshape(len(cp.methods), -1, len(cp.seeds))
    val = cp.val.reshape(len(cp.methods), -1, len(cp.seeds))
    picked = test[np.arange(len(cp.methods)), chosen]  # [method, seed]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        sample = rng.choice(all_seeds, len(all_seeds))
        c = _choose(cp, sample)
        draws.append(np.nanmean(test[np.arange(len(cp.methods)), c][:, sample], axis=-1))
    boot = np.asarray(draws)
    k = cp.methods.index(KTO) if KTO in cp.methods else None
    rows = []
    for i, method in enumerate(cp.methods):
        lr_i, step_i = divmod(int(chosen[i]), len(cp.steps))
        low, high = t_interval(picked[i][np.isfinite(picked[i])])
        d = picked[i] - picked[k] if k is not None else np.full(len(cp.seeds), np.nan)
        d_low, d_high = t_interval(d[np.isfinite(d)])
        bd = boot[:, i] - boot[:, k] if k is not None else np.full(n_boot, np.nan)
        rows.append({
            "method": method, "lr": cp.lrs[lr_i], "step": cp.steps[step_i],
            "val_accuracy": float(np.nanmean(val[i, chosen[i]])), "test_accuracy": float(np.nanmean(picked[i])),
            "test_low": low, "test_high": high, "base_test_accuracy": cp.base["test"],
            "diff_vs_kto": float(np.nanmean(d)), "diff_low": d_low, "diff_high": d_high,
            "boot_diff_low": float(np.nanquantile(bd, 0.025)), "boot_diff_high": float(np.nanquantile(bd, 0.975)),
            "n_seeds": int(np.isfinite(picked[i]).sum()),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=EARLY_STOPPING_COLUMNS)
