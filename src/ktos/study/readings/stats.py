r"""Statistics across seeds, and paired comparisons of KTO-S with KTO.

For ``n`` seeds with values ``x_i``: the mean, the sample standard deviation (``ddof = 1``) and the 95%
confidence half-width ``h = t_{0.975, n-1} * std / sqrt(n)`` (Student t, ``scipy.stats.t``). With one
seed ``std`` and ``h`` are NaN.

Paired comparison (:func:`paired`): with ``d_i = b_i - a_i`` over the seeds both have, the mean of ``d``
with its 95% t-interval (also divided by the mean of ``a``), the per-seed ratio ``b_i / a_i``, an exact
two-sided sign test (``scipy.stats.binomtest``, zero differences dropped), and the smallest mean
difference a paired t-test at this ``n`` and spread detects with 80% power at the 5% level,
``(t_{0.975, n-1} + t_{0.80, n-1}) * sd(d) / sqrt(n)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

#: Two-sided level of every interval.
LEVEL = 0.95
#: Power for the smallest detectable effect.
POWER = 0.80
#: Bootstrap resamples of the tables that re-choose a checkpoint in each resample (the envelope, early stopping, the
#: matched-KL frontier: a Python loop per resample).
N_BOOT = 2000


def t_quantile(dof: int, level: float = LEVEL) -> float:
    """Two-sided Student t critical value ``t_{(1 + level)/2, dof}`` (``dof >= 1``)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    return float(stats.t.ppf((1 + level) / 2, dof))


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% Student-t interval of the mean of ``values`` (NaN with fewer than two values)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    h = t_quantile(len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - h), float(values.mean() + h)


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

    ``df`` should hold one method in one cell. Returns columns step, mean, std, ci95, n (steps where no
    run has a finite value are dropped).
    """
    ok = df[(df["status"] != "diverged") & np.isfinite(df[column].astype(float))]
    out = ok.groupby("step", sort=True)[column].agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].where(out["n"] > 1)
    dof = (out["n"] - 1).clip(lower=1)
    out["ci95"] = (stats.t.ppf((1 + LEVEL) / 2, dof) * out["std"] / np.sqrt(out["n"])).where(out["n"] > 1)
    return out.loc[:, ["step", "mean", "std", "ci95", "n"]]


@dataclass(frozen=True)
class Paired:
    """A paired comparison of ``b`` (KTO-S) with ``a`` (KTO) over ``n`` seeds; see the module docstring."""

    n: int
    mean_a: float
    mean_b: float
    diff: float
    diff_low: float
    diff_high: float
    rel: float
    rel_low: float
    rel_high: float
    ratio_median: float
    ratio_min: float
    ratio_max: float
    n_lower: int
    n_higher: int
    sign_p: float
    mde: float
    mde_rel: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def call(self, margin: float) -> str:
        """``"lower"`` / ``"higher"`` (interval excludes 0), ``"equivalent"`` (relative interval inside
        ``+-margin``), else ``"undecided"``; ``"too few seeds"`` below two pairs."""
        if self.n < 2 or not np.isfinite(self.diff_low):
            return "too few seeds"
        if self.diff_high < 0:
            return "lower"
        if self.diff_low > 0:
            return "higher"
        if -margin < self.rel_low and self.rel_high < margin:
            return "equivalent"
        return "undecided"


def paired(a: pd.Series, b: pd.Series) -> Paired:
    """Paired statistics of ``b - a`` over the index labels (seeds) where both are finite."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
    both = both[np.isfinite(both["a"]) & np.isfinite(both["b"])]
    n = len(both)
    if n == 0:
        nan = math.nan
        return Paired(0, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, 0, 0, nan, nan, nan)
    d = (both["b"] - both["a"]).to_numpy()
    mean_a, mean_b = float(both["a"].mean()), float(both["b"].mean())
    low, high = t_interval(d)
    scale = abs(mean_a) if mean_a != 0 else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (both["b"] / both["a"]).replace([np.inf, -np.inf], np.nan).dropna()
    n_lower, n_higher = int((d < 0).sum()), int((d > 0).sum())
    sign_p = float(stats.binomtest(n_lower, n_lower + n_higher, 0.5).pvalue) if n_lower + n_higher else math.nan
    mde = math.nan
    if n >= 2:
        mde = (t_quantile(n - 1) + float(stats.t.ppf(POWER, n - 1))) * float(d.std(ddof=1)) / math.sqrt(n)
    return Paired(
        n=n,
        mean_a=mean_a,
        mean_b=mean_b,
        diff=float(d.mean()),
        diff_low=low,
        diff_high=high,
        rel=float(d.mean()) / scale,
        rel_low=low / scale,
        rel_high=high / scale,
        ratio_median=float(ratio.median()) if len(ratio) else math.nan,
        ratio_min=float(ratio.min()) if len(ratio) else math.nan,
        ratio_max=float(ratio.max()) if len(ratio) else math.nan,
        n_lower=n_lower,
        n_higher=n_higher,
        sign_p=sign_p,
        mde=mde,
        mde_rel=mde / scale,
    )
