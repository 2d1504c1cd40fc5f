"""The frontier read from fitted curves at matched KL (ktos.study.readings.curve_frontier; docs/study.md, fifth
amendment)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ktos.study.readings import curve_frontier as cf
from ktos.study.readings.power import CURVE_LRS

N_ITEMS, STEPS = 600, list(range(20, 301, 20))


def accuracy(d: np.ndarray, shift: float) -> np.ndarray:
    """A quadratic in d = sqrt(KL), the curve family the estimator fits."""
    return 0.55 + 0.1 * d - 0.08 * d**2 + shift


def study(delta: dict[str, float], *, bases: int = 4, seeds: tuple[int, ...] = (15, 16), kl_scale: float = 1.0):
    """A trajectory table and run records where KTO-S's accuracy is KTO's plus ``delta[base]`` at every KL, items
    right in order (no item noise); the policy KL is the probe KL times ``kl_scale``."""
    rows, infos = [], []
    for b in range(bases):
        base = f"base{b}"
        for seed in seeds:
            for method in ("kto", "kto_s"):
                for k, lr in enumerate(CURVE_LRS):
                    kl = (k + 1) * 0.6 * np.asarray(STEPS) / 300 * (1 + 0.05 * seed % 3)
                    acc = accuracy(np.sqrt(kl * kl_scale), delta[base] if method == "kto_s" else 0.0)
                    bits = ["1" * round(a * N_ITEMS) + "0" * (N_ITEMS - round(a * N_ITEMS)) for a in acc]
                    infos.append({"status": "completed", "regime": "main", "method": method, "learning_rate": lr,
                                  "base": {"name": base}, "seed": seed, "config": {"max_steps": 300},
                                  "step_quality_correct": dict(zip(map(str, STEPS[:-1]), bits[:-1], strict=True)),
                                  "quality": {"correct": bits[-1]}})  # fmt: skip
                    for step, x, a in zip(STEPS, kl, acc, strict=True):
                        rows.append({"regime": "main", "base": base, "method": method, "lr": lr, "seed": seed,
                                     "step": step, "max_steps": 300, "probe_kl": x, "policy_kl": x * kl_scale,
                                     "step_quality_logprob": math.log(a), "quality_logprob": math.log(acc[-1]),
                                     "quality": acc[-1], "base_quality": 0.55})  # fmt: skip
    return pd.DataFrame(rows), infos


def test_a_difference_at_every_kl_is_read_in_both_kls_and_called_differs():
    delta = {f"base{b}": 0.05 + 0.004 * b for b in range(4)}
    table = cf.curve_frontier_table(*study(delta), "main").set_index(["kl", "kl_low"])
    assert list(table.index.get_level_values("kl").unique()) == ["policy_kl", "probe_kl"]
    for row in table.itertuples():
        assert row.diff == pytest.approx(np.mean(list(delta.values())), abs=2e-3)  # items quantise to 1/600
        assert row.low < row.diff < row.high and row.call == cf.DIFFERS
        assert (row.n_bases, row.runs_read, row.runs, row.n_items) == (4, 8, 8, N_ITEMS)
        assert row.logprob_diff > 0 and row.collapsed_kto == row.collapsed_kto_s == 0


def test_no_difference_is_called_the_same_and_the_kls_are_read_apart():
    delta = {f"base{b}": 0.002 * (-1) ** b for b in range(4)}
    # the policy KL is half the probe KL: the same bin centre lies at other checkpoints in each
    table = cf.curve_frontier_table(*study(delta, kl_scale=0.5), "main").set_index(["kl", "kl_low"])
    assert (table["call"] == cf.SAME).all()
    assert table["diff"].abs().max() < 0.004
    # a run whose checkpoints do not reach the bin gives no reading there
    far = cf.curve_frontier_table(*study(delta, kl_scale=0.1), "main").set_index(["kl", "kl_low"])
    assert far.loc[("policy_kl", 1.0), "runs_read"] == 0 and far.loc[("probe_kl", 1.0), "runs_read"] == 8
    assert far.loc[("policy_kl", 1.0), "call"] == cf.NOT_COVERED


def test_collapsed_runs_are_counted_per_method():
    df, infos = study({f"base{b}": 0.0 for b in range(4)})
    df.loc[(df["method"] == "kto") & (df["lr"] == CURVE_LRS[-1]) & (df["base"] == "base0"), "quality"] = 0.2
    table = cf.curve_frontier_table(df, infos, "main")
    assert (table["collapsed_kto"] == 2).all() and (table["collapsed_kto_s"] == 0).all()  # 2 seeds of base0


def test_the_decision_rule():
    assert cf.call(-0.01, 0.015) == cf.SAME
    assert cf.call(0.001, 0.03) == cf.DIFFERS and cf.call(-0.05, -0.021) == cf.DIFFERS
    assert cf.call(-0.01, 0.03) == cf.UNDECIDED and cf.call(math.nan, 0.01) == cf.UNDECIDED
