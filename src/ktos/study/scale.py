r"""Model size against step size: which drives KTO's climbing KL and KTO-S's levelling off (docs/study.md).

Adam's update per parameter is about the learning rate whatever the gradient's scale, so one learning rate
is a larger step ``||dtheta||`` for a model with more parameters. The sweep trains several base-model sizes
(``params``) at several learning rates, and every run logs its update norm per step. Per method, an
ordinary least-squares fit over runs,

    log K(T) = a + b_u log u + b_p log params,

with ``K(T)`` the final probe KL (nats) and ``u`` the mean update norm over the last half of training,
says whether the step (``b_u``) or the size at a given step (``b_p``) carries the climb: each coefficient
comes with its 95% interval (Student t on the fit's residual degrees of freedom).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .stats import t_quantile

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


def drivers(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method, the least-squares fit of log final probe KL on log update norm and log parameter count over
    the completed runs with positive values: coefficient, standard error, 95% interval, ``n`` and ``R^2``."""
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
        x = np.column_stack([np.ones(len(grp)), np.log(grp["late_update_norm"]), np.log(grp["params"])])
        y = np.log(grp["final_probe_kl"].to_numpy(float))
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        resid = y - x @ coef
        dof = len(y) - x.shape[1]
        sigma2 = float(resid @ resid) / dof
        se = np.sqrt(np.diag(sigma2 * np.linalg.inv(x.T @ x)))
        r2 = 1 - float(resid @ resid) / float(((y - y.mean()) ** 2).sum())
        t = t_quantile(dof)
        for name, b, s in zip(("intercept", "log_update_norm", "log_params"), coef, se, strict=True):
            rows.append({
                "method": method, "term": name, "coef": b, "se": s, "low": b - t * s, "high": b + t * s,
                "n": len(y), "r2": r2,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["method", "term", "coef", "se", "low", "high", "n", "r2"])


def driver_sentence(fit: pd.DataFrame) -> str:
    """What the fit says drives the final KL: the step, the size at a given step, both, or neither."""
    parts = []
    for method, grp in fit.groupby("method"):
        terms = grp.set_index("term")
        u, p = terms.loc["log_update_norm"], terms.loc["log_params"]
        step = u["low"] > 0
        size = p["low"] > 0 or p["high"] < 0
        reading = {(True, False): "the step drives it; size adds nothing detectable at a given step",
                   (True, True): "both the step and the size at a given step matter",
                   (False, True): "the size matters at a given step, the step does not",
                   (False, False): "neither term is distinguishable from 0"}[(bool(step), bool(size))]  # fmt: skip
        parts.append(
            f"{method}: log K(T) rises {u['coef']:.2f} [{u['low']:.2f}, {u['high']:.2f}] per unit log update norm and "
            f"{p['coef']:.2f} [{p['low']:.2f}, {p['high']:.2f}] per unit log parameter count (R² {u['r2']:.2f}, "
            f"{int(u['n'])} runs): {reading}"
        )
    return "; ".join(parts) if parts else ""
