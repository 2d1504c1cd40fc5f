r"""Statistics across seeds.

For ``n`` seeds with values ``x_i``: the mean, the sample standard deviation (``ddof = 1``) and the
95% confidence half-width ``h = t_{0.975, n-1} * std / sqrt(n)`` (Student t, ``scipy.stats.t``). With
one seed ``std`` and ``h`` are NaN. Diverged runs (``status == "diverged"``) never enter a statistic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats


def t_quantile(dof: int, level: float = 0.95) -> float:
    """Two-sided Student t critical value ``t_{(1 + level)/2, dof}`` (``dof >= 1``)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    return float(stats.t.ppf((1 + level) / 2, dof))


def mean_spread(values: Iterable[float]) -> tuple[float, float, float, int]:
    """``(mean, std, 95% CI half-width, n)`` over the finite values; NaN where undefined."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, math.nan, 1
    std = float(x.std(ddof=1))
    return float(x.mean()), std, t_quantile(n - 1) * std / math.sqrt(n), n


def step_stats(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per-step mean, std, 95% CI half-width and n of ``column`` across the non-diverged runs in ``df``.

    ``df`` should hold one method at one lr. Returns columns step, mean, std, ci95, n (steps where no
    run has a finite value are dropped).
    """
    ok = df[(df["status"] != "diverged") & np.isfinite(df[column].astype(float))]
    out = ok.groupby("step", sort=True)[column].agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].where(out["n"] > 1)
    dof = (out["n"] - 1).clip(lower=1)
    out["ci95"] = (stats.t.ppf(0.975, dof) * out["std"] / np.sqrt(out["n"])).where(out["n"] > 1)
    return out.loc[:, ["step", "mean", "std", "ci95", "n"]]
