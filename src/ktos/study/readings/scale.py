r"""Model size against step size: which drives KTO's climbing KL and KTO-S's levelling off (docs/study.md).

Adam's update per parameter is about the learning rate whatever the gradient's scale, so one learning rate
is a larger step ``||dtheta||`` for a model with more parameters. The sweep trains several base-model sizes
(``params``) at several learning rates, and every run logs its update norm per step. Per method, an
ordinary least-squares fit over runs,

    log K(T) = a + b_u log u + b_p log params,

with ``K(T)`` the final probe KL (nats) and ``u`` the mean update norm over the last half of training,
says whether the step (``b_u``) or the size at a given step (``b_p``) carries the climb: each coefficient
comes with its 95% interval (Student t on the fit's residual degrees of freedom).

Read at the learning rate a user picks instead (third amendment, docs/study.md), the **size law** is a fit over
cell means, one per base, size and learning rate (the seeds of a cell are not independent samples of the size
effect: they share one base),

    log mean K(T) = a + b_lr log lr + b_N log params,

and :func:`size_predictions` extrapolates it, with 95% prediction intervals for a new cell mean, to sizes not
yet trained (:data:`PREDICTED_SIZES`). Beside each prediction stands the **no-growth null**: the largest fitted
size's cell mean at that learning rate, carried forward unchanged. :func:`check_predictions` counts a prediction
only where it holds and the null falls outside its interval (a law the null passes too says nothing about size).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd

from .stats import t_quantile

#: Sizes the size law predicts before they are trained, as parameter counts (ktos.toy.pretrain.SIZES with the
#: character-level tokenizer; a test checks them against the built models).
PREDICTED_SIZES: dict[str, int] = {"2.6M": 2_649_344, "21M": 21_031_424, "105M": 104_981_504}
#: Learning rates of the predictions (the size sweep's lowest and highest).
PREDICTED_LRS: tuple[float, ...] = (3e-5, 2.7e-4)
#: Columns of :func:`size_fit` and :func:`size_predictions`.
FIT_COLUMNS: tuple[str, ...] = ("method", "term", "coef", "se", "low", "high", "n", "r2")
PREDICTION_COLUMNS: tuple[str, ...] = (
    "method", "size", "params", "lr", "predicted_final_probe_kl", "low", "high", "n_cells", "fit_params_low",
    "fit_params_high", "null_final_probe_kl",
)  # fmt: skip

#: Columns of :func:`scale_table`.
SCALE_COLUMNS: tuple[str, ...] = (
    "regime", "params", "method", "lr", "n", "final_probe_kl", "late_rise", "late_rise_low", "late_rise_high",
    "late_trend", "n_rising_seeds", "n_levelling_seeds", "late_update_norm", "late_grad_norm", "quality",
    "base_quality",
)  # fmt: skip


def scale_table(cells: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The cells of a size sweep with each size's parameter count, ordered by size, method and learning rate."""
    params = runs.groupby("regime")["params"].first()
    out = cells.assign(params=cells["regime"].map(params))
    if out["params"].isna().all():
        return pd.DataFrame(columns=SCALE_COLUMNS)
    return out.sort_values(["params", "method", "lr"]).loc[:, list(SCALE_COLUMNS)].reset_index(drop=True)


#: Columns of :func:`drivers`.
DRIVER_COLUMNS: tuple[str, ...] = ("method", "term", "coef", "se", "low", "high", "n", "r2", "n_bases", "base_low",
                                   "base_high")  # fmt: skip


def _driver_design(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    x = np.column_stack([np.ones(len(runs)), np.log(runs["late_update_norm"]), np.log(runs["params"])])
    return x, np.log(runs["final_probe_kl"].to_numpy(float))


def cluster_se(x: np.ndarray, y: np.ndarray, coef: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Cluster-robust (CR1) standard errors of a least-squares fit with the base model as the unit: the sandwich
    ``(X'X)^-1 (sum_g X_g' e_g e_g' X_g) (X'X)^-1`` times ``G/(G-1) (n-1)/(n-k)``, ``G`` clusters (the seeds of a
    base share it, so they are not independent samples of the size effect)."""
    resid = y - x @ coef
    bread = np.linalg.inv(x.T @ x)
    scores = [x[clusters == g].T @ resid[clusters == g] for g in np.unique(clusters)]
    meat = sum(np.outer(sc, sc) for sc in scores)
    (n, k), groups = x.shape, len(scores)
    return np.sqrt(np.diag(groups / (groups - 1) * (n - 1) / (n - k) * bread @ meat @ bread))


def drivers(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method, the least-squares fit of log final probe KL on log update norm and log parameter count over
    the completed runs with positive values: coefficient, standard error, 95% interval (runs as independent),
    ``n`` and ``R^2``; with three bases or more, ``base_low``/``base_high``, the 95% interval with the base as
    the unit (:func:`cluster_se`, Student t on ``n_bases - 1`` degrees of freedom): the interval a claim about
    sizes rests on."""
    rows = []
    ok = runs[
        (runs["status"] == "completed")
        & (runs["final_probe_kl"] > 0)
        & (runs["late_update_norm"] > 0)
        & (runs["params"] > 0)
    ]
    for method, grp in ok.groupby("method"):
        if grp["params"].nunique() < 2 or len(grp) < 5:
            continue
        x, y = _driver_design(grp)
        coef, cov, _, dof, r2 = _ols(x, y)
        se = np.sqrt(np.diag(cov))
        t = t_quantile(dof)
        bases = grp["base"].fillna("").to_numpy(str) if "base" in grp else np.full(len(grp), "")
        n_bases = len(set(bases) - {""})
        if n_bases >= 3 and "" not in set(bases):
            base_se, base_t = cluster_se(x, y, coef, bases), t_quantile(n_bases - 1)
        else:
            base_se, base_t = np.full(3, math.nan), math.nan
        for name, b, s, c in zip(("intercept", "log_update_norm", "log_params"), coef, se, base_se, strict=True):
            rows.append({
                "method": method, "term": name, "coef": b, "se": s, "low": b - t * s, "high": b + t * s,
                "n": len(y), "r2": r2, "n_bases": n_bases, "base_low": b - base_t * c, "base_high": b + base_t * c,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=list(DRIVER_COLUMNS))


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int, float]:
    """``(coef, covariance, residual variance, residual dof, R^2)`` of the least-squares fit of ``y`` on ``x``."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    dof = len(y) - x.shape[1]
    sigma2 = float(resid @ resid) / dof
    r2 = 1 - float(resid @ resid) / float(((y - y.mean()) ** 2).sum())
    return coef, sigma2 * np.linalg.inv(x.T @ x), sigma2, dof, r2


def _cell_means(scale: pd.DataFrame) -> pd.DataFrame:
    """The cells of a size sweep (one row per base, size, method and learning rate) usable in the log fit."""
    if not {"method", "lr", "params", "final_probe_kl"} <= set(scale.columns):
        return pd.DataFrame(columns=["method", "lr", "params", "final_probe_kl"])
    ok = scale[(scale["final_probe_kl"] > 0) & (scale["params"] > 0) & (scale["lr"] > 0)]
    return ok[ok.groupby("method")["params"].transform("nunique") >= 2]


def _design(lr: np.ndarray, params: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(lr)), np.log(lr), np.log(params)])


def _size_laws(scale: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame, np.ndarray, np.ndarray, float, int, float]]:
    """Per method with at least 4 usable cells: ``(method, cells, coef, covariance, residual variance, dof, R^2)``
    of the size law's least-squares fit."""
    for method, grp in _cell_means(scale).groupby("method"):
        if len(grp) >= 4:
            x = _design(grp["lr"].to_numpy(float), grp["params"].to_numpy(float))
            yield (str(method), grp, *_ols(x, np.log(grp["final_probe_kl"].to_numpy(float))))


def size_fit(scale: pd.DataFrame) -> pd.DataFrame:
    """Per method, the size law over the cell means of :func:`scale_table` (module docstring): each term's
    coefficient, standard error and 95% interval, ``n`` cells and ``R^2``; empty with fewer than 4 cells or
    one size."""
    rows = []
    for method, grp, coef, cov, _, dof, r2 in _size_laws(scale):
        t, se = t_quantile(dof), np.sqrt(np.diag(cov))
        for name, b, s in zip(("intercept", "log_lr", "log_params"), coef, se, strict=True):
            rows.append({"method": method, "term": name, "coef": b, "se": s, "low": b - t * s, "high": b + t * s,
                         "n": len(grp), "r2": r2})  # fmt: skip
    return pd.DataFrame(rows, columns=list(FIT_COLUMNS))


def size_predictions(
    scale: pd.DataFrame, sizes: dict[str, int] = PREDICTED_SIZES, lrs: tuple[float, ...] = PREDICTED_LRS
) -> pd.DataFrame:
    """Per method, the size law's prediction of a new cell's mean final probe KL (nats) at each size and learning
    rate, with its 95% prediction interval: ``exp(x0 b +- t s sqrt(1 + x0 (X'X)^-1 x0'))``, which widens with the
    distance from the sizes fitted. ``fit_params_low``/``high`` are the smallest and largest size fitted;
    ``null_final_probe_kl`` is the no-growth null, the largest fitted size's mean cell at that learning rate (NaN
    where that size was not trained at it)."""
    rows = []
    for method, grp, coef, cov, sigma2, dof, _ in _size_laws(scale):
        t = t_quantile(dof)
        largest = grp[grp["params"] == grp["params"].max()]
        for size, params in sizes.items():
            for lr in lrs:
                x0 = _design(np.array([lr]), np.array([float(params)]))[0]
                centre = float(x0 @ coef)
                half = t * float(np.sqrt(sigma2 + x0 @ cov @ x0))
                rows.append({
                    "method": method, "size": size, "params": params, "lr": lr,
                    "predicted_final_probe_kl": np.exp(centre), "low": np.exp(centre - half),
                    "high": np.exp(centre + half), "n_cells": len(grp), "fit_params_low": grp["params"].min(),
                    "fit_params_high": grp["params"].max(),
                    "null_final_probe_kl": largest.loc[np.isclose(largest["lr"], lr), "final_probe_kl"].mean(),
                })  # fmt: skip
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))


#: Columns of :func:`check_predictions`.
CHECK_COLUMNS: tuple[str, ...] = (
    "method", "size", "params", "lr", "predicted_final_probe_kl", "low", "high", "observed_final_probe_kl",
    "observed_low", "observed_high", "n_bases", "n_runs", "holds", "null_final_probe_kl", "null_holds", "counts",
)  # fmt: skip


def check_predictions(scale: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Predicted against observed: for each predicted cell (method, parameter count, learning rate) that the
    sweep trained, the observed mean final probe KL (the mean of its bases' cell means) with the range of the base
    means, whether it lies inside the 95% prediction interval (``holds``), whether the no-growth null does too
    (``null_holds``; NaN where the predictions carry no null), and whether the prediction ``counts``: it holds and
    the null does not."""
    rows = []
    for pred in predictions.itertuples(index=False):
        here = scale[
            (scale["method"] == pred.method)
            & np.isclose(scale["params"], pred.params, rtol=1e-5)
            & np.isclose(scale["lr"], pred.lr)
        ]  # fmt: skip  (tables print 6 significant digits)
        if here.empty:
            continue
        observed = float(here["final_probe_kl"].mean())
        holds = bool(pred.low <= observed <= pred.high)
        null = float(getattr(pred, "null_final_probe_kl", math.nan))
        null_holds = bool(pred.low <= null <= pred.high) if np.isfinite(null) else math.nan
        rows.append({
            "method": pred.method, "size": pred.size, "params": pred.params, "lr": pred.lr,
            "predicted_final_probe_kl": pred.predicted_final_probe_kl, "low": pred.low, "high": pred.high,
            "observed_final_probe_kl": observed, "observed_low": float(here["final_probe_kl"].min()),
            "observed_high": float(here["final_probe_kl"].max()), "n_bases": len(here), "n_runs": int(here["n"].sum()),
            "holds": holds, "null_final_probe_kl": null, "null_holds": null_holds,
            "counts": holds and null_holds is False,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(CHECK_COLUMNS))
