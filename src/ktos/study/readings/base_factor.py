r"""The base model as a random factor (docs/study.md, third amendment): a cell judged over bases and seeds.

A study trained from ``B`` independently pretrained bases, ``n_b`` paired seeds on base ``b``, has for a run
metric ``x`` (final probe KL, late rise, task accuracy, update norm) the values ``x_{b,i}``. Seeds are nested
in bases: seed 15 on one base and seed 15 on another share a batch order but not a starting point.

* **Pooled mean**: the mean of the base means, ``m = (1/B) sum_b xbar_b`` (each base weighs the same).
* **Two-level bootstrap** (:func:`two_level_bootstrap`): resample ``B`` bases with replacement, then within
  each drawn base its ``n_b`` seeds with replacement, and recompute ``m``; the 2.5% and 97.5% quantiles of
  20,000 resamples are the 95% interval. Beside it, the Student-t interval over the ``B`` base means (``B - 1``
  degrees of freedom), which does not shrink when a base has more seeds.
* **Spread**: ``sd_bases``, the standard deviation of the base means, against ``sd_seeds``, the pooled
  within-base standard deviation of the seeds; ``base_share`` is the between-base variance component
  ``max(0, sd_bases^2 - sd_seeds^2 / nbar)`` over itself plus ``sd_seeds^2``.
* **Trend**: a cell keeps rising when the interval of the pooled late rise lies above the bar ``B`` of
  :mod:`ktos.study.readings.trend_rules` (from the pooled final KL), levels off when it lies below, and is undecided
  otherwise; the per-base verdicts (the same rule on each base's seeds) are counted beside it.
* **Paired**: KTO-S minus KTO on each (base, seed), the pooled mean of the differences with both intervals,
  the bases and seeds on which KTO-S is lower, and the smallest difference the ``B`` bases detect with 80%
  power at the 5% level, ``(t_{0.975,B-1} + t_{0.80,B-1}) sd(dbar_b) / sqrt(B)``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...loss_types import KTO, KTO_S
from .stats import POWER, t_interval, t_quantile
from .trend_rules import COLLAPSED, UNDECIDED, bar, cell_trend, classify, collapsed

#: Resamples of the two-level bootstrap: enough that the interval's ends quoted at 2 significant digits do not move
#: with the bootstrap seed (``tests/test_base_factor.py``; at 2,000 the headline's lower end moved between 3.68 and
#: 3.85 over 20 seeds), and :data:`CHUNK` resamples drawn at a time.
N_BOOT_POOLED, CHUNK = 20000, 2000
#: Run metrics judged over bases: run_summary column -> unit.
METRICS: dict[str, str] = {
    "final_probe_kl": "nats",
    "late_rise": "nats",
    "quality": "accuracy",
    "late_update_norm": "update norm",
    "final_policy_kl": "nats",
    "window_policy_kl": "nats",
}
#: Columns of :func:`pooled_cells` and :func:`pooled_paired`.
CELL_COLUMNS: tuple[str, ...] = (
    "regime", "method", "lr", "metric", "n_bases", "n_runs", "mean", "low", "high", "t_low", "t_high", "sd_bases",
    "sd_seeds", "base_share", "base_min", "base_max",
)  # fmt: skip
TREND_COLUMNS: tuple[str, ...] = (
    "regime", "method", "lr", "n_bases", "late_rise", "low", "high", "final_probe_kl", "bar", "late_trend",
    "n_bases_rising", "n_bases_levelling", "n_bases_undecided",
)  # fmt: skip
PAIRED_COLUMNS: tuple[str, ...] = (
    "regime", "lr", "metric", "n_bases", "n_pairs", "kto_mean", "diff", "low", "high", "t_low", "t_high", "rel",
    "rel_low", "rel_high", "n_bases_lower", "n_pairs_lower", "mde", "sd_bases", "sd_seeds",
)  # fmt: skip
CELL = ["regime", "method", "lr"]


def _metrics(runs: pd.DataFrame) -> list[str]:
    """The :data:`METRICS` the runs table has (the policy KL's only where the runs measured it)."""
    return [m for m in METRICS if m in runs]


def _groups(values: pd.DataFrame, column: str) -> list[np.ndarray]:
    """The finite values of ``column`` per base, bases in sorted order, empty bases dropped."""
    out = []
    for _, grp in values.groupby("base", sort=True):
        x = grp[column].to_numpy(float)
        x = x[np.isfinite(x)]
        if len(x):
            out.append(x)
    return out


def two_level_bootstrap(groups: list[np.ndarray], *, n_boot: int = N_BOOT_POOLED, seed: int = 0) -> np.ndarray:
    """``n_boot`` resampled pooled means (module docstring) of per-base value arrays ``groups``, drawn in chunks of
    :data:`CHUNK` resamples as arrays: the bases of each resample, then each drawn base's seeds, with replacement."""
    rng = np.random.default_rng(seed)
    sizes = np.array([len(g) for g in groups])
    padded = np.zeros((len(groups), sizes.max()))
    for b, g in enumerate(groups):
        padded[b, : len(g)] = g
    means = []
    for start in range(0, n_boot, CHUNK):
        k = min(CHUNK, n_boot - start)
        drawn = rng.integers(len(groups), size=(k, len(groups)))  # [resample, base slot]
        n = sizes[drawn]
        picks = (rng.random((k, len(groups), sizes.max())) * n[..., None]).astype(int)  # seeds of the drawn base
        used = np.arange(sizes.max()) < n[..., None]
        values = np.where(used, padded[drawn[..., None], picks], 0.0)
        means.append((values.sum(-1) / n).mean(-1))
    return np.concatenate(means)


def spread(groups: list[np.ndarray]) -> dict[str, float]:
    """The pooled mean with both 95% intervals, the between-base and within-base standard deviations, the
    between-base share of the variance, and the lowest and highest base mean."""
    base_means = np.array([g.mean() for g in groups])
    if len(groups) < 2:
        nan = math.nan
        mean = float(base_means[0]) if len(groups) else nan
        return dict(mean=mean, low=nan, high=nan, t_low=nan, t_high=nan, sd_bases=nan, sd_seeds=nan,
                    base_share=nan, base_min=mean, base_max=mean)  # fmt: skip
    boots = two_level_bootstrap(groups)
    t_low, t_high = t_interval(base_means)
    within = [g.var(ddof=1) for g in groups if len(g) > 1]
    var_seeds = float(np.mean(within)) if within else math.nan
    var_bases = float(base_means.var(ddof=1))
    n_bar = float(np.mean([len(g) for g in groups]))
    component = max(0.0, var_bases - var_seeds / n_bar) if np.isfinite(var_seeds) else math.nan
    return {
        "mean": float(base_means.mean()),
        "low": float(np.quantile(boots, 0.025)),
        "high": float(np.quantile(boots, 0.975)),
        "t_low": t_low,
        "t_high": t_high,
        "sd_bases": math.sqrt(var_bases),
        "sd_seeds": math.sqrt(var_seeds) if np.isfinite(var_seeds) else math.nan,
        "base_share": component / (component + var_seeds) if component + var_seeds > 0 else math.nan,
        "base_min": float(base_means.min()),
        "base_max": float(base_means.max()),
    }


def _completed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[(runs["status"] != "diverged") & runs["base"].notna()]


def pooled_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per regime x method x learning rate x metric of :data:`METRICS`, over bases and seeds."""
    rows = []
    for cell, grp in _completed(runs).groupby(CELL, sort=True):
        for metric in _metrics(runs):
            groups = _groups(grp, metric)
            if groups:
                rows.append({**dict(zip(CELL, cell, strict=True)), "metric": metric, "n_bases": len(groups),
                             "n_runs": sum(map(len, groups)), **spread(groups)})  # fmt: skip
    return pd.DataFrame(rows, columns=list(CELL_COLUMNS))


#: The KLs whose trend is judged: KL -> (the runs table's late-rise column, its final-KL column).
TREND_KLS: dict[str, tuple[str, str]] = {
    "probe_kl": ("late_rise", "final_probe_kl"),
    "policy_kl": ("policy_late_rise", "final_policy_kl"),
}


def pooled_trends(
    runs: pd.DataFrame, base_cells: pd.DataFrame | None, threshold: float, kl: str = "probe_kl"
) -> pd.DataFrame:
    """Per regime x method x learning rate: the pooled late rise of ``kl`` (:data:`TREND_KLS`) with its two-level
    interval against the bar, the pooled trend, and how many bases keep rising, level off or are undecided on their
    own (the probe KL's: ``base_cells``, the per-base cell table with its ``late_trend``; another KL's: the same
    rule, :func:`~ktos.study.readings.trend_rules.cell_trend`, on each base's seeds)."""
    rise_column, final_column = TREND_KLS[kl]
    rows = []
    for cell, grp in _completed(runs).groupby(CELL, sort=True):
        rise, final = _groups(grp, rise_column), _groups(grp, final_column)
        if not rise:
            continue
        pooled, final_kl = spread(rise), float(np.mean([g.mean() for g in final]))
        trend = classify(pooled["low"], pooled["high"], final_kl, threshold) if len(rise) > 1 else UNDECIDED
        if {"quality", "base_quality"} <= set(grp.columns):
            quality = [g.mean() for g in _groups(grp, "quality")]
            base_quality = [g.mean() for g in _groups(grp, "base_quality")]
            if quality and base_quality and collapsed(float(np.mean(quality)), float(np.mean(base_quality))):
                trend = COLLAPSED
        if base_cells is not None:
            mine = base_cells[(base_cells[CELL] == pd.Series(cell, index=CELL)).all(axis=1)]["late_trend"]
        else:
            mine = pd.Series([
                cell_trend(g[rise_column], g[final_column], threshold, float(g["quality"].mean()),
                           float(g["base_quality"].iat[0]))["late_trend"]
                for _, g in grp.groupby("base", sort=True)
            ], dtype=object)  # fmt: skip
        rows.append({
            **dict(zip(CELL, cell, strict=True)), "n_bases": len(rise), "late_rise": pooled["mean"],
            "low": pooled["low"], "high": pooled["high"], final_column: final_kl,
            "bar": bar(final_kl, threshold), "late_trend": trend,
            "n_bases_rising": int((mine == "keeps rising").sum()),
            "n_bases_levelling": int((mine == "levels off").sum()),
            "n_bases_undecided": int((mine == UNDECIDED).sum()),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=[final_column if c == "final_probe_kl" else c for c in TREND_COLUMNS])


def _share(x: float, of: float) -> float:
    """``x / of``, NaN when ``of`` is 0 or not finite."""
    return x / of if of != 0 and np.isfinite(of) else math.nan


def pooled_paired(runs: pd.DataFrame, other: str = KTO_S) -> pd.DataFrame:
    """``other`` (KTO-S) minus KTO per regime x learning rate x metric, paired on each (base, seed) both
    completed, pooled over bases (module docstring)."""
    rows = []
    ok = _completed(runs)
    for (regime, lr), grp in ok.groupby(["regime", "lr"], sort=True):
        wide = {m: g.set_index(["base", "seed"]) for m, g in grp.groupby("method")}
        if not {KTO, other} <= set(wide):
            continue
        for metric in _metrics(runs):
            d = (wide[other][metric] - wide[KTO][metric]).dropna().rename("d").reset_index()
            groups = _groups(d, "d")
            if len(groups) < 2:
                continue
            kto = wide[KTO].loc[d.set_index(["base", "seed"]).index, metric].reset_index()
            kto_mean = float(np.mean([g.mean() for g in _groups(kto, metric)]))
            s = spread(groups)
            base_diffs = np.array([g.mean() for g in groups])
            n = len(groups)
            mde = (t_quantile(n - 1) + t_quantile(n - 1, 2 * POWER - 1)) * float(base_diffs.std(ddof=1)) / math.sqrt(n)
            rows.append({
                "regime": regime, "lr": lr, "metric": metric, "n_bases": n, "n_pairs": len(d), "kto_mean": kto_mean,
                "diff": s["mean"], "low": s["low"], "high": s["high"], "t_low": s["t_low"], "t_high": s["t_high"],
                "rel": _share(s["mean"], kto_mean), "rel_low": _share(s["low"], kto_mean),
                "rel_high": _share(s["high"], kto_mean),
                "n_bases_lower": int((base_diffs < 0).sum()), "n_pairs_lower": int((d["d"] < 0).sum()), "mde": mde,
                "sd_bases": s["sd_bases"], "sd_seeds": s["sd_seeds"],
            })  # fmt: skip
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


#: Columns of :func:`seed_set_table`.
SEED_SET_COLUMNS: tuple[str, ...] = (
    "regime", "base", "method", "lr", "metric", "set_a", "n_a", "mean_a", "sd_a", "set_b", "n_b", "mean_b", "sd_b",
    "diff", "welch_p",
)  # fmt: skip


def parse_seed_set(text: str) -> list[int]:
    """``"3-12"`` -> ``[3, ..., 12]``; ``"3,5,7"`` -> ``[3, 5, 7]`` (ranges and commas may mix)."""
    seeds: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        seeds += list(range(int(first), int(last or first) + 1))
    return seeds


def seed_set_table(runs: pd.DataFrame, sets: dict[str, str]) -> pd.DataFrame:
    """Base against seed: on each base, the runs of two named seed sets (``{name: "3-12", ...}``, the first two)
    compared per regime x method x learning rate x metric: each set's mean and standard deviation, the difference
    (second minus first) and Welch's two-sided p. Seeds only reorder batches and probe pairs, so two seed sets on
    one base differ by chance alone; a difference between bases that seed sets on one base do not show is the
    base's."""
    from scipy import stats

    if len(sets) < 2:
        return pd.DataFrame(columns=list(SEED_SET_COLUMNS))
    (name_a, a), (name_b, b) = list(sets.items())[:2]
    seeds_a, seeds_b = parse_seed_set(a), parse_seed_set(b)
    rows = []
    for (regime, base, method, lr), grp in _completed(runs).groupby(["regime", "base", "method", "lr"], sort=True):
        for metric in _metrics(runs):
            x = grp.loc[grp["seed"].isin(seeds_a), metric].dropna().to_numpy(float)
            y = grp.loc[grp["seed"].isin(seeds_b), metric].dropna().to_numpy(float)
            if len(x) < 2 or len(y) < 2:
                continue
            p = float(stats.ttest_ind(y, x, equal_var=False).pvalue)
            rows.append({
                "regime": regime, "base": base, "method": method, "lr": lr, "metric": metric, "set_a": name_a,
                "n_a": len(x), "mean_a": x.mean(), "sd_a": x.std(ddof=1), "set_b": name_b, "n_b": len(y),
                "mean_b": y.mean(), "sd_b": y.std(ddof=1), "diff": y.mean() - x.mean(), "welch_p": p,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=list(SEED_SET_COLUMNS))
