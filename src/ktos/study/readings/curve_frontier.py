r"""The frontier read from fitted curves at matched KL (docs/study.md, fifth amendment): ``curve_frontier.csv``.

For each run ``(base b, seed s)`` and method, the accuracy curve ``A(d) = a + alpha d - beta d^2``, ``d = sqrt(KL)``,
is fitted to every checkpoint of the run's learning rates with KL up to :data:`~ktos.study.readings.power.KL_FIT_MAX`
and read at a bin centre ``K0`` (:func:`ktos.study.readings.power.curve_weights`); KTO-S minus KTO is taken within the
run, averaged over the base's seeds, then over the bases, each weighing the same. Its 95% interval is the Student t
interval over the base means (``B - 1`` degrees of freedom, ``B`` the bases with a reading). The call, with the
fourth amendment's margin ``m`` (:data:`~ktos.study.readings.matched_frontier.MARGIN`): **the same** when the interval
lies inside ``[-m, m]``, **differs** when it excludes 0, else **undecided**; a bin that fewer than 2 bases' runs
straddle is **not covered**.

Read per KL: the policy KL (the verdict) and the probe KL ``z0`` (beside it). Beside each call: the realised
detectable difference, ``(t_0.975 + t_0.80) SE`` with ``SE`` from the variance components re-estimated on these
runs (:func:`ktos.study.readings.power.variance_components`, bases whose every run gives a reading); the same curve
fitted to the correct answer's mean log-probability (nats), where the runs recorded it; and per method the runs that
collapsed (final accuracy below half the base's), kept in the fit and counted so that a difference they carry is
visible.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ...loss_types import KTO, KTO_S
from .matched_frontier import MARGIN, ItemCheckpoints, item_checkpoints
from .power import (
    CURVE_LRS,
    POWER_BINS,
    curve_weights,
    detectable,
    run_item_differences,
    standard_error,
    variance_components,
)
from .stats import t_interval
from .trend_rules import collapsed

#: The KLs the frontier is read in: the policy's (the verdict) and the probe's z0 (beside it).
CURVE_KLS: tuple[str, ...] = ("policy_kl", "probe_kl")
#: The calls of the decision rule, and the label of a bin fewer than 2 bases' runs reach (the amendment's rule:
#: reported as such, the probe-KL bin beside it, the grid not extended).
SAME, DIFFERS, UNDECIDED, NOT_COVERED = "the same", "differs", "undecided", "not covered"


def call(low: float, high: float, margin: float = MARGIN) -> str:
    """The decision rule on a 95% interval ``[low, high]`` (module docstring)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return UNDECIDED
    if -margin <= low and high <= margin:
        return SAME
    return DIFFERS if low > 0 or high < 0 else UNDECIDED


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% Student t interval (:func:`ktos.study.readings.stats.t_interval`) of the finite ``values``."""
    v = values[np.isfinite(values)]
    return (float(v.mean()) if len(v) else math.nan), *t_interval(v)


def base_means(per_run: np.ndarray) -> np.ndarray:
    """``per_run[base, seed]`` (NaN where a run gives no reading) -> the mean over each base's read seeds."""
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(per_run).sum(1)
        return np.where(counts > 0, np.nansum(per_run, 1) / np.maximum(counts, 1), np.nan)


def logprob_differences(df: pd.DataFrame, cp: ItemCheckpoints, kl: str, k0: float) -> np.ndarray:
    """``[base, seed]``: per run the fitted-curve KTO-S minus KTO difference of the correct answer's mean
    log-probability (``step_quality_logprob`` of ``df`` at its quality steps, ``quality_logprob`` at the last) at
    ``kl`` = ``k0``, over the learning rates of :data:`~ktos.study.readings.power.CURVE_LRS`; NaN where a run gives no
    reading, all NaN where the runs did not record it."""
    out = np.full((len(cp.bases), np.bincount(cp.run_base).min()), np.nan)
    if "step_quality_logprob" not in df or not np.isfinite(pd.to_numeric(df["step_quality_logprob"])).any():
        return out
    rows = df.assign(base=df["base"].fillna(""), score=df["step_quality_logprob"])
    last = rows["step"] == rows["max_steps"]
    rows.loc[last, "score"] = rows.loc[last, "quality_logprob"]
    rows = rows[np.isclose(rows["lr"].to_numpy(float)[:, None], np.asarray(CURVE_LRS)[None, :]).any(1)]
    rows = rows.dropna(subset=["score", kl]).drop_duplicates(["method", "lr", "base", "seed", "step"], keep="last")
    runs = {key: g for key, g in rows.groupby(["method", "base", "seed"])}
    for b, base in enumerate(cp.bases):
        for s, seed in enumerate(cp.seeds[cp.run_base == b][: out.shape[1]]):
            fitted = []
            for method in (KTO_S, KTO):
                points = runs.get((method, base, seed))
                if points is None:
                    fitted.append(np.nan)
                    continue
                h = curve_weights(points[kl].to_numpy(float), k0)
                fitted.append(float((h * points["score"].to_numpy(float)).sum()) if np.isfinite(h).all() else np.nan)
            out[b, s] = fitted[0] - fitted[1]
    return out


def collapsed_runs(df: pd.DataFrame, regime: str) -> dict[str, int]:
    """Per method, the runs of ``regime`` (every learning rate) whose final accuracy is below half the base's."""
    runs = df[df["regime"] == regime].drop_duplicates(["method", "lr", "base", "seed"], keep="last")
    return {
        m: int(sum(collapsed(float(q), float(b)) for q, b in zip(g["quality"], g["base_quality"], strict=True)))
        for m, g in runs.groupby("method")
    }


def curve_frontier_table(df: pd.DataFrame, infos: list[dict[str, Any]], regime: str) -> pd.DataFrame:
    """One row per KL (:data:`CURVE_KLS`, those ``df`` measured) and bin
    (:data:`~ktos.study.readings.power.POWER_BINS`): the base-mean KTO-S minus KTO accuracy difference at the bin
    centre, its t interval and call, the bases and runs read, the realised SE and detectable difference, the
    log-probability difference and its interval, and the collapsed runs per method (module docstring)."""
    rows = []
    gone = collapsed_runs(df, regime)
    for kl in CURVE_KLS:
        if kl not in df or not np.isfinite(pd.to_numeric(df[kl], errors="coerce")).any():
            continue
        cp = item_checkpoints(df, infos, regime, kl=kl)
        if cp is None:
            continue
        for lo, hi in POWER_BINS:
            k0 = (lo + hi) / 2
            e = run_item_differences(cp, k0)  # [base, seed, item]
            per_run = e.mean(2)
            mean, low, high = mean_interval(base_means(per_run))
            complete = np.isfinite(per_run).all(1)
            n_read = int(np.isfinite(base_means(per_run)).sum())
            if complete.sum() >= 2:
                vc = variance_components(e[complete])
                se = standard_error(vc, n_read, e.shape[1], e.shape[2])
            else:
                se = math.nan
            lp_mean, lp_low, lp_high = mean_interval(base_means(logprob_differences(df, cp, kl, k0)))
            rows.append({
                "kl": kl, "kl_low": lo, "kl_high": hi, "kl_read": k0, "diff": mean, "low": low, "high": high,
                "call": call(low, high) if n_read >= 2 else NOT_COVERED, "margin": MARGIN, "n_bases": n_read,
                "n_bases_planned": len(cp.bases),
                "runs_read": int(np.isfinite(per_run).sum()), "runs": int(per_run.size), "n_items": e.shape[2],
                "se_realised": se, "detectable_realised": detectable(se, n_read) if math.isfinite(se) else math.nan,
                "reaches_margin": bool(math.isfinite(se) and detectable(se, n_read) <= MARGIN),
                "logprob_diff": lp_mean, "logprob_low": lp_low, "logprob_high": lp_high,
                "collapsed_kto": gone.get(KTO, 0), "collapsed_kto_s": gone.get(KTO_S, 0),
            })  # fmt: skip
    return pd.DataFrame(rows)
