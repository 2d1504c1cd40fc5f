r"""The study's analyses of the tidy trajectory table (:mod:`ktos.study.readings.rundir`), as defined in docs/study.md.

* :func:`run_summary`: one row per run: probe KL at the end and at the window step, the runaway test
  (``d_mid``, ``d_last``), the stability criterion and task accuracy at the window step and the end.
* :func:`cell_summary`: one row per regime x method x learning rate: means across seeds with t-intervals,
  the runaway test on the mean trajectory, counts of runaway and stable seeds.
* :func:`paired_table`: KTO-S against KTO per regime x learning rate, paired by seed
(:func:`ktos.study.readings.stats.paired`).
* :func:`matched_kl`: KTO-S's accuracy against KTO's at the learning rate where KTO reaches the same final
  probe KL, with a seed-bootstrap interval.
* :func:`headline_cell`: the regime-search rule that picks the headline cell.

KL values are the held-out probe KL (sequence-level nats) unless a column says ``kl`` (TRL's logged value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ...loss_types import KTO, KTO_S
from .rundir import KEYS
from .stats import Paired, mean_spread, paired, t_interval
from .trend_rules import cell_trend, run_trend

CELL: tuple[str, ...] = ("regime", "method", "lr")
#: Metrics compared between the methods, paired by seed: run_summary column -> label.
PAIRED_METRICS: dict[str, str] = {
    "final_probe_kl": "probe KL at the last step",
    "phase_probe_kl": "probe KL at the end of the runaway phase",
    "phase_quality": "task accuracy at the end of the runaway phase",
    "window_probe_kl": "probe KL at the window step",
    "final_kl": "logged kl (mean of the last 3 steps)",
    "late_rise": "rise of the probe KL over the last half of training",
    "late_update_norm": "update norm ||Δθ|| per step over the last half of training",
    "late_grad_norm": "gradient norm per step over the last half of training",
    "quality": "task accuracy at the end",
    "window_quality": "task accuracy at the window step",
}
#: Columns of :func:`paired_table`.
PAIRED_COLUMNS: tuple[str, ...] = ("regime", "lr", "metric", "label", *Paired.__dataclass_fields__, "call")
#: Columns of :func:`matched_kl`.
MATCHED_COLUMNS: tuple[str, ...] = (
    "regime", "lr_kto_s", "kto_s_final_probe_kl", "kto_s_quality", "lr_star", "kto_quality_at_lr_star",
    "quality_diff", "diff_low", "diff_high", "n_boot_valid", "n_seeds",
    "nearest_lr", "nearest_kto_final_probe_kl", "nearest_kto_quality", "nearest_diff", "nearest_diff_low",
    "nearest_diff_high",
)  # fmt: skip
#: Schedules in the order the headline rule breaks ties.
SCHEDULE_ORDER: tuple[str, ...] = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class Criteria:
    """The study's settings of docs/study.md, from the config's ``analysis`` section (``ktos tables``/``ktos figures``
    flags); the defaults are the workflow schema's.

    Attributes:
        threshold: KL threshold ``tau``, sequence-level nats on the held-out probe KL.
        window: last step of the stability window.
        margin: equivalence margin, a fraction of KTO's mean.
        phase_end: last step of the phase in which KTO's KL runs away (``None``: no such phase singled out).
        beta: the β at which the notes' claims are judged and the headline rule looks first.
        search_steps: the run length (optimizer steps) whose cells the headline rule picks from.
        arms: the mechanism arms: regime name -> what it changes, for the verdict's sentences.
        seed_sets: two named seed sets (``"3-12"``) compared on each base (base against seed).
        predictions: a ``size_predictions.csv`` made before this study's runs, to compare them with.
    """

    threshold: float = 0.1
    window: int = 20
    margin: float = 0.1
    phase_end: int | None = None
    beta: float = 0.2
    search_steps: int = 150
    arms: Mapping[str, str] = field(default_factory=dict)
    seed_sets: Mapping[str, str] = field(default_factory=dict)
    predictions: str | None = None


def _value_at(steps: np.ndarray, values: np.ndarray, step: float) -> float:
    """The value at the measured step nearest ``step`` (NaN without measurements)."""
    if len(steps) == 0:
        return math.nan
    return float(values[np.abs(steps - step).argmin()])


def runaway_increments(steps: np.ndarray, kl: np.ndarray) -> tuple[float, float]:
    """``(d_mid, d_last)``: the probe KL's rise over the middle and the last third of the measured steps, each
    its per-step rate over the measured window times ``T/3`` (the probe steps nearest ``T/3`` and ``2T/3`` may
    split the steps into unequal windows: at 40 steps with a probe every 5, 10 and 15 steps)."""
    if len(steps) < 3:
        return math.nan, math.nan
    end = steps.max()
    t1, t2 = (float(steps[np.abs(steps - s).argmin()]) for s in (end / 3, 2 * end / 3))
    if not 0 < t1 < t2 < end:
        return math.nan, math.nan
    k1, k2, k3 = (_value_at(steps, kl, s) for s in (t1, t2, end))
    third = end / 3
    return (k2 - k1) / (t2 - t1) * third, (k3 - k2) / (end - t2) * third


def runs_away(d_mid: float, d_last: float, threshold: float) -> bool:
    """Still rising by more than ``threshold`` over the last third, and not by less than over the middle third
    (up to rounding: exactly linear growth, ``d_last == d_mid``, runs away)."""
    return bool(np.isfinite(d_last) and d_last > threshold and d_last >= d_mid - 1e-9 * abs(d_mid))


def _quality_at(run: pd.DataFrame, step: int | None) -> float:
    """The task accuracy measured at ``step`` during training (NaN when it was not)."""
    at = run.loc[run["step"] == step, "step_quality"] if step else run.iloc[:0]["step_quality"]
    return float(at.iat[0]) if len(at) else math.nan


def _probe(run: pd.DataFrame) -> pd.DataFrame:
    return run[np.isfinite(run["probe_kl"].astype(float))].sort_values("step")


def run_summary(df: pd.DataFrame, criteria: Criteria = Criteria()) -> pd.DataFrame:
    """One row per run (see the module docstring); ``stable`` applies docs/study.md's three conditions."""
    rows = []
    for key, run in df.groupby(list(KEYS), sort=True, dropna=False):
        run = run.sort_values("step")
        probe = _probe(run)
        steps, kl = probe["step"].to_numpy(float), probe["probe_kl"].to_numpy(float)
        se = probe["probe_kl_se"].to_numpy(float)
        in_window = steps <= criteria.window
        d_mid, d_last = runaway_increments(steps, kl)
        status = str(run["status"].iat[0])
        base = float(run["base_quality"].iat[0])
        quality = float(run["quality"].iat[0])
        window_quality = _quality_at(run, criteria.window)
        phase = steps <= (criteria.phase_end or 0)
        phase_mid, phase_last = runaway_increments(steps[phase], kl[phase])
        logged = run.dropna(subset=["kl"])
        late = run[run["step"] >= run["step"].max() / 2]
        row = {
            **dict(zip(KEYS, key, strict=True)),
            "beta": run["beta"].iat[0],
            "max_steps": run["max_steps"].iat[0],
            "status": status,
            "last_step": run["step"].max(),
            "final_probe_kl": kl[-1] if len(kl) else math.nan,
            "final_probe_kl_se": se[-1] if len(se) else math.nan,
            "window_probe_kl": _value_at(steps[in_window], kl[in_window], criteria.window),
            "max_window_probe_kl": kl[in_window].max() if in_window.any() else math.nan,
            "final_kl": logged["kl"].tail(3).mean() if len(logged) else math.nan,
            "d_mid": d_mid,
            "d_last": d_last,
            "runaway": runs_away(d_mid, d_last, criteria.threshold),
            **run_trend(steps, kl, criteria.threshold, quality, base),
            "late_update_norm": late["update_norm"].mean(),
            "late_grad_norm": late["grad_norm"].mean(),
            "quality_metric": run["quality_metric"].iat[0],
            "quality": quality,
            "window_quality": window_quality,
            "base_quality": base,
            "params": run["params"].iat[0],
            "phase_probe_kl": _value_at(steps[phase], kl[phase], criteria.phase_end or 0),
            "phase_quality": _quality_at(run, criteria.phase_end),
            "phase_d_mid": phase_mid,
            "phase_d_last": phase_last,
            "phase_runaway": runs_away(phase_mid, phase_last, criteria.threshold),
        }
        row.update(_stability(row, kl[in_window], se[in_window], criteria, n_items=200))
        row.update(_policy_kl(run, criteria, quality, base))
        rows.append(row)
    return pd.DataFrame(rows)


def _policy_kl(run: pd.DataFrame, criteria: Criteria, quality: float, base_quality: float) -> dict[str, Any]:
    """The policy KL (nats, KL on the policy's own samples) at the end and at the window's end, and its late rise and
    trend by the probe KL's rule (``policy_late_*``; docs/study.md, "The policy KL's trend"), where the run measured
    it (no columns otherwise, so that tables from before it are unchanged)."""
    if "policy_kl" not in run:
        return {}
    policy = run[np.isfinite(pd.to_numeric(run["policy_kl"], errors="coerce"))]
    if policy.empty:
        return {}
    steps, values = policy["step"].to_numpy(float), policy["policy_kl"].to_numpy(float)
    trend = run_trend(steps, values, criteria.threshold, quality, base_quality)
    return {
        "final_policy_kl": float(values[-1]),
        "window_policy_kl": _value_at(steps, values, criteria.window),
        **{f"policy_{key}": value for key, value in trend.items()},
    }


def _stability(row: dict, kl: np.ndarray, se: np.ndarray, criteria: Criteria, n_items: int) -> dict:
    """docs/study.md's stability conditions for one run: below tau, not below zero, no accuracy loss."""
    below = bool(len(kl)) and bool((kl < criteria.threshold).all())
    not_negative = bool(len(kl)) and bool((kl >= -2 * np.nan_to_num(se, nan=0.0)).all())
    base = row["base_quality"]
    if np.isfinite(base):
        floor = base - 2 * math.sqrt(base * (1 - base) / n_items)
        kept = [q for q in (row["window_quality"], row["quality"]) if np.isfinite(q)]
        accuracy_kept = bool(kept) and all(q >= floor for q in kept)
    else:
        accuracy_kept = True  # no task metric: the condition does not apply
    diverged = row["status"] == "diverged"
    return {
        "below_threshold": below,
        "not_below_zero": not_negative,
        "accuracy_kept": accuracy_kept,
        "stable": below and not_negative and accuracy_kept and not diverged,
    }


def cell_summary(df: pd.DataFrame, runs: pd.DataFrame, criteria: Criteria = Criteria()) -> pd.DataFrame:
    """One row per regime x method x learning rate over its non-diverged runs: mean final probe KL with
    its 95% interval, mean accuracy, the runaway test on the mean probe trajectory, seed counts."""
    rows = []
    for cell, grp in runs.groupby(list(CELL), sort=True):
        ok = grp[grp["status"] != "diverged"]
        traj = df[(df[list(CELL)] == pd.Series(cell, index=CELL)).all(axis=1) & (df["status"] != "diverged")]
        mean_traj = _probe(traj).groupby("step")["probe_kl"].mean()
        steps, kl = mean_traj.index.to_numpy(float), mean_traj.to_numpy(float)
        d_mid, d_last = runaway_increments(steps, kl)
        phase = steps <= (criteria.phase_end or 0)
        phase_mid, phase_last = runaway_increments(steps[phase], kl[phase])
        kl_mean, _, kl_h, n = mean_spread(ok["final_probe_kl"])
        q_mean, _, q_h, _ = mean_spread(ok["quality"])
        rows.append({
            **dict(zip(CELL, cell, strict=True)),
            "beta": grp["beta"].iat[0],
            "max_steps": grp["max_steps"].iat[0],
            "n": n,
            "n_diverged": int((grp["status"] == "diverged").sum()),
            "final_probe_kl": kl_mean,
            "final_probe_kl_ci95": kl_h,
            "window_probe_kl": ok["window_probe_kl"].mean(),
            "quality": q_mean,
            "quality_ci95": q_h,
            "base_quality": grp["base_quality"].iat[0],
            "d_mid": d_mid,
            "d_last": d_last,
            "runaway": runs_away(d_mid, d_last, criteria.threshold),
            "n_runaway_seeds": int(ok["runaway"].sum()),
            **cell_trend(
                ok["late_rise"], ok["final_probe_kl"], criteria.threshold, q_mean, float(grp["base_quality"].iat[0])
            ),
            "n_rising_seeds": int((ok["late_trend"] == "keeps rising").sum()),
            "n_levelling_seeds": int((ok["late_trend"] == "levels off").sum()),
            "late_update_norm": ok["late_update_norm"].mean(),
            "late_grad_norm": ok["late_grad_norm"].mean(),
            "phase_probe_kl": ok["phase_probe_kl"].mean(),
            "phase_quality": ok["phase_quality"].mean(),
            "phase_d_mid": phase_mid,
            "phase_d_last": phase_last,
            "phase_runaway": runs_away(phase_mid, phase_last, criteria.threshold),
            "n_stable": int(grp["stable"].sum()),
        })  # fmt: skip
    return pd.DataFrame(rows)


def paired_table(runs: pd.DataFrame, criteria: Criteria = Criteria()) -> pd.DataFrame:
    """KTO-S against KTO, paired by seed, for every regime x learning rate both trained and every metric
    of :data:`PAIRED_METRICS`: :class:`ktos.study.readings.stats.Paired` fields plus ``call`` at the margin."""
    ok = runs[runs["status"] != "diverged"]
    rows = []
    for (regime, lr), grp in ok.groupby(["regime", "lr"], sort=True):
        by = {m: g.set_index("seed") for m, g in grp.groupby("method")}
        if set(by) != {KTO, KTO_S}:
            continue
        for metric, label in PAIRED_METRICS.items():
            result = paired(by[KTO][metric], by[KTO_S][metric])
            if result.n == 0:
                continue
            rows.append({
                "regime": regime, "lr": lr, "metric": metric, "label": label,
                **result.as_dict(), "call": result.call(criteria.margin),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def kl_ratio_over_time(df: pd.DataFrame, regime: str, lr: float) -> pd.DataFrame:
    """Per probe step, the median over seeds of the paired ratio of probe KL, KTO-S over KTO (a brake that
    tightens with KL makes it fall over training; a uniformly smaller step keeps it flat)."""
    sub = df[(df["regime"] == regime) & np.isclose(df["lr"], lr) & (df["status"] != "diverged")]
    probe = _probe(sub).pivot_table(index=["step", "seed"], columns="method", values="probe_kl")
    if not {KTO, KTO_S} <= set(probe.columns):
        return pd.DataFrame(columns=["step", "median_ratio", "n"])
    ratio = (probe[KTO_S] / probe[KTO]).replace([np.inf, -np.inf], np.nan).dropna()
    out = ratio.groupby(level="step").agg(median_ratio="median", n="count").reset_index()
    return out


def _interp_log_lr(lrs: np.ndarray, values: np.ndarray, target: float, at: np.ndarray) -> tuple[float, float]:
    """Where the curve ``values(log lr)`` first reaches ``target`` (linear in log lr between grid points),
    and the curve ``at(log lr)`` there; NaN when ``target`` is outside the curve's range."""
    order = np.argsort(lrs)
    x, y, z = np.log(lrs[order]), values[order], at[order]
    for i in range(len(x) - 1):
        lo, hi = sorted((y[i], y[i + 1]))
        if lo <= target <= hi and y[i + 1] != y[i]:
            w = (target - y[i]) / (y[i + 1] - y[i])
            return float(math.exp(x[i] + w * (x[i + 1] - x[i]))), float(z[i] + w * (z[i + 1] - z[i]))
    return math.nan, math.nan


def _nearest_real_run(kto: pd.DataFrame, s: pd.DataFrame) -> dict[str, float]:
    """Beside an interpolated match: KTO's grid learning rate whose mean final probe KL is nearest KTO-S's, its
    mean KL and accuracy, and KTO-S minus KTO there, paired by seed, with its 95% t-interval."""
    kl = kto["final_probe_kl"].mean()
    lr = float((kl - s["final_probe_kl"].mean()).abs().idxmin())
    diff = (s["quality"] - kto["quality"][lr]).dropna()
    low, high = t_interval(diff.to_numpy())
    return {
        "nearest_lr": lr, "nearest_kto_final_probe_kl": float(kl[lr]),
        "nearest_kto_quality": float(kto["quality"][lr].mean()), "nearest_diff": float(diff.mean()),
        "nearest_diff_low": low, "nearest_diff_high": high,
    }  # fmt: skip


def _matched_estimate(kto: pd.DataFrame, kto_s: pd.DataFrame, sample: np.ndarray) -> tuple[float, float, float]:
    """On the seeds ``sample``: the lr at which KTO's mean final probe KL (per lr, ``kto``'s columns) matches
    KTO-S's mean (``kto_s``), KTO's interpolated accuracy there, and KTO-S's accuracy minus it."""
    k = kto.loc[sample]
    target = kto_s.reindex(sample)["final_probe_kl"].mean()
    lr_star, acc = _interp_log_lr(
        k["final_probe_kl"].columns.to_numpy(float), k["final_probe_kl"].mean().to_numpy(),
        target, k["quality"].mean().to_numpy(),
    )  # fmt: skip
    return lr_star, acc, kto_s.reindex(sample)["quality"].mean() - acc


def matched_kl(runs: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """For each regime with KTO at three or more learning rates and each KTO-S learning rate in it: the KTO
    learning rate ``lr_star`` matching KTO-S's mean final probe KL, KTO's interpolated accuracy there and the
    difference KTO-S minus KTO, with a 95% seed-bootstrap interval (the seed set resampled jointly)."""
    ok = runs[runs["status"] != "diverged"]
    rows = []
    for regime, grp in ok.groupby("regime", sort=True):
        kto = grp[grp["method"] == KTO].pivot_table(index="seed", columns="lr", values=["final_probe_kl", "quality"])
        kto_s = grp[grp["method"] == KTO_S]
        if kto.empty or kto["final_probe_kl"].shape[1] < 3 or kto_s.empty:
            continue
        seeds = kto.index.to_numpy()
        for lr_s, s_grp in kto_s.groupby("lr"):
            s = s_grp.set_index("seed")[["final_probe_kl", "quality"]]

            lr_star, acc_star, diff = _matched_estimate(kto, s, seeds)
            rng = np.random.default_rng(seed)  # per cell: its interval does not depend on the other cells
            boots = np.array([_matched_estimate(kto, s, rng.choice(seeds, len(seeds)))[2] for _ in range(n_boot)])
            boots = boots[np.isfinite(boots)]
            low, high = np.quantile(boots, [0.025, 0.975]) if len(boots) >= n_boot // 2 else (math.nan, math.nan)
            rows.append({
                **_nearest_real_run(kto, s),
                "regime": regime, "lr_kto_s": lr_s, "kto_s_final_probe_kl": s["final_probe_kl"].mean(),
                "kto_s_quality": s["quality"].mean(), "lr_star": lr_star, "kto_quality_at_lr_star": acc_star,
                "quality_diff": diff, "diff_low": float(low), "diff_high": float(high),
                "n_boot_valid": len(boots), "n_seeds": len(seeds),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS)


def headline(df: pd.DataFrame, regime: str | None = None, lr: float | None = None) -> tuple[str, float]:
    """The headline cell of a table: ``regime`` (default: the table's first) and ``lr`` (default: the
    regime's learning rate with the most seeds)."""
    regime = regime or str(df["regime"].iloc[0])
    if lr is None:
        lr = float(df[df["regime"] == regime].groupby("lr")["seed"].nunique().idxmax())
    return regime, lr


def regime_schedule(regime: str) -> str:
    """The schedule a regime-search regime name starts with (``constant_s150_b0.2`` -> ``constant``)."""
    return regime.split("_", 1)[0]


def headline_cell(cells: pd.DataFrame, *, beta: float, steps: int) -> pd.Series | None:
    """docs/study.md's rule: among the ``steps``-step KTO cells whose mean probe KL runs away, those at the
    ``beta`` nearest ``beta`` that has one, the smallest learning rate, ties by :data:`SCHEDULE_ORDER`."""
    cand = cells[(cells["method"] == KTO) & (cells["max_steps"] == steps) & cells["runaway"]]
    if cand.empty:
        return None
    nearest = cand.loc[(cand["beta"] - beta).abs() == (cand["beta"] - beta).abs().min()]
    rank = nearest["regime"].map(
        lambda r: SCHEDULE_ORDER.index(regime_schedule(r)) if regime_schedule(r) in SCHEDULE_ORDER else 99
    )
    return nearest.assign(rank=rank).sort_values(["lr", "rank"]).iloc[0].drop("rank")
