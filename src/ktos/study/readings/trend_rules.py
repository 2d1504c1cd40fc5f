r"""Does a KL trajectory keep rising or level off? The rules of docs/study.md (second amendment).

For one run of ``T`` optimizer steps with probe KL ``K(s)`` (sequence-level nats), the **last half** is the
probe steps from ``h`` (the probe step nearest ``T/2``) to ``T``:

* late rise ``R = K(T) - K(h)``, in nats;
* late share ``R / K(T)``: the fraction of the final KL added over the last half (0.5 for linear growth
  from 0, about 0.29 for ``K ~ sqrt(t)``, near 0 for a KL that has levelled off);
* noise ``sqrt(2) * sd``, where ``sd`` is the residual standard deviation of ``K`` around a straight line
  fitted over the last half: the spread of a difference of two probe values that is due to step-to-step
  jitter, not to the trend;
* the bar ``B = max(tau, share * K(T))`` with ``share = 0.1`` (:data:`LATE_SHARE`) and ``tau`` the study's
  KL threshold: a rise of less than a tenth of the final KL, or less than ``tau``, is no rise.

A run **keeps rising** when ``R - 2 noise > B``, **levels off** when ``R + 2 noise < B``, and is undecided
otherwise. A cell (regime x method x learning rate) is judged on its seeds' rises: with ``R_bar`` their
mean and ``[lo, hi]`` its 95% Student-t interval, and ``B`` from the mean final KL, the cell keeps rising
when ``lo > B`` and levels off when ``hi < B``.

A run or cell whose final task accuracy is below half its base model's (:data:`COLLAPSE_SHARE`) has
**collapsed** (:func:`collapsed`): its KL is not judged, and it is never said to level off (a policy that has
stopped moving because it fell apart is not a stable one).

The **contrast cell** (:func:`contrast_cell`) is the least aggressive cell, the smallest learning rate
among the longest-trained cells, where KTO's KL keeps rising while KTO-S's levels off.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...loss_types import KTO, KTO_S
from .stats import t_interval

#: The share of the final probe KL that the last half of training must add, beyond noise, to count as a rise.
LATE_SHARE = 0.1
#: Names of the outcomes: the three of the rules, and a collapsed run's or cell's.
RISING, LEVELS_OFF, UNDECIDED, COLLAPSED = "keeps rising", "levels off", "undecided", "collapsed"
#: A run or cell has collapsed when its final task accuracy is below this share of its base model's.
COLLAPSE_SHARE = 0.5


def collapsed(quality: float, base_quality: float) -> bool:
    """Whether final task accuracy ``quality`` is below :data:`COLLAPSE_SHARE` of the base's ``base_quality``
    (False without a task metric)."""
    return bool(np.isfinite(quality) and np.isfinite(base_quality) and quality < COLLAPSE_SHARE * base_quality)


def late_rise(steps: np.ndarray, kl: np.ndarray) -> tuple[float, float, float]:
    """``(R, K(T), noise)`` of one trajectory over its last half (module docstring); NaN with < 3 probe steps
    in the last half."""
    if len(steps) < 3:
        return math.nan, math.nan, math.nan
    end = steps.max()
    half = steps[np.abs(steps - end / 2).argmin()]
    late = steps >= half
    if late.sum() < 3:
        return math.nan, math.nan, math.nan
    x, y = steps[late], kl[late]
    residual = y - np.polyval(np.polyfit(x, y, 1), x)
    sd = float(residual.std(ddof=2)) if len(x) > 2 else math.nan
    final = float(kl[steps == end][0])
    return final - float(kl[steps == half][0]), final, math.sqrt(2) * sd


def bar(final_kl: float, threshold: float) -> float:
    """``B = max(tau, LATE_SHARE * K(T))``: the rise that the last half must beat (nats)."""
    return max(threshold, LATE_SHARE * final_kl)


def classify(low: float, high: float, final_kl: float, threshold: float) -> str:
    """:data:`RISING` when the whole interval ``[low, high]`` of the late rise is above the bar,
    :data:`LEVELS_OFF` when it is below, else :data:`UNDECIDED`."""
    if not (np.isfinite(low) and np.isfinite(high) and np.isfinite(final_kl)):
        return UNDECIDED
    b = bar(final_kl, threshold)
    return RISING if low > b else LEVELS_OFF if high < b else UNDECIDED


def run_trend(
    steps: np.ndarray, kl: np.ndarray, threshold: float, quality: float = math.nan, base_quality: float = math.nan
) -> dict[str, float | str]:
    """One run's late rise, share, noise and trend (``late_*`` columns of the runs table): :data:`COLLAPSED` when
    its final accuracy ``quality`` is below half its base's ``base_quality``."""
    rise, final, noise = late_rise(steps, kl)
    trend = classify(rise - 2 * noise, rise + 2 * noise, final, threshold)
    return {
        "late_rise": rise,
        "late_share": rise / final if np.isfinite(rise) and final > 0 else math.nan,
        "late_noise": noise,
        "late_trend": COLLAPSED if collapsed(quality, base_quality) else trend,
    }


def cell_trend(
    rises: pd.Series, finals: pd.Series, threshold: float, quality: float = math.nan, base_quality: float = math.nan
) -> dict[str, float | str]:
    """A cell's mean late rise with its 95% t-interval over seeds, the share of the mean final KL, and its trend
    (:data:`COLLAPSED` when its mean final accuracy ``quality`` is below half its base's ``base_quality``)."""
    ok = np.isfinite(rises.to_numpy(float))
    r, k = rises.to_numpy(float)[ok], finals.to_numpy(float)[ok]
    if len(r) == 0:
        return {
            "late_rise": math.nan,
            "late_rise_low": math.nan,
            "late_rise_high": math.nan,
            "late_share": math.nan,
            "late_trend": UNDECIDED,
        }
    low, high = t_interval(r)
    final = float(k.mean())
    return {
        "late_rise": float(r.mean()),
        "late_rise_low": low,
        "late_rise_high": high,
        "late_share": float(r.mean()) / final if final > 0 else math.nan,
        "late_trend": COLLAPSED if collapsed(quality, base_quality) else classify(low, high, final, threshold),
    }


def contrast_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Every regime x learning rate where KTO's cell keeps rising and KTO-S's levels off."""
    trend = cells.pivot_table(index=["regime", "lr"], columns="method", values="late_trend", aggfunc="first")
    if not {KTO, KTO_S} <= set(trend.columns):
        return pd.DataFrame(columns=["regime", "lr", "max_steps"])
    hits = trend[(trend[KTO] == RISING) & (trend[KTO_S] == LEVELS_OFF)].reset_index()[["regime", "lr"]]
    steps = cells.groupby(["regime", "lr"])["max_steps"].max().reset_index()
    return hits.merge(steps, on=["regime", "lr"])


def contrast_cell(cells: pd.DataFrame) -> pd.Series | None:
    """The headline rule of the second amendment: among the :func:`contrast_cells` of the longest training, the
    smallest learning rate (ties: regime name). ``None`` when no cell shows the contrast."""
    hits = contrast_cells(cells)
    if hits.empty:
        return None
    longest = hits[hits["max_steps"] == hits["max_steps"].max()]
    return longest.sort_values(["lr", "regime"]).iloc[0]
