"""The findings of a study over several bases (third amendment) and of the size law in words: each cell's pooled
trend over bases, the pooled paired differences, base against seed, what drives the final KL, and the size law's
predictions and their checks. Every number comes from the tables (:mod:`ktos.study.readings.base_factor`,
:mod:`ktos.study.readings.scale`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ....runnames import lr_tag, method_label
from .numbers import fmt, interval, p_value, pct, trend_phrase


def base_trend_sentences(trends: pd.DataFrame, cells: pd.DataFrame) -> list[str]:
    """Per regime x learning rate and method, the pooled trend over bases (third amendment) with the per-base
    verdicts counted, and the spread of the final KL between bases against that between seeds."""
    text = []
    kl = cells[cells["metric"] == "final_probe_kl"].set_index(["regime", "method", "lr"])
    for row in trends.itertuples(index=False):
        spread = kl.loc[(row.regime, row.method, row.lr)] if (row.regime, row.method, row.lr) in kl.index else None
        between = (
            f"; final probe KL {fmt(spread['mean'])} {interval(spread['low'], spread['high'])} nats, base means "
            f"{fmt(spread['base_min'])} to {fmt(spread['base_max'])} (sd {fmt(spread['sd_bases'])} between bases, "
            f"{fmt(spread['sd_seeds'])} between seeds on a base)"
            if spread is not None
            else ""
        )
        text.append(
            f"{method_label(row.method)}, {row.regime} at lr {lr_tag(row.lr)}, over {row.n_bases} bases: its KL "
            f"{trend_phrase(row.late_trend)} (pooled last-half rise {fmt(row.late_rise)} "
            f"{interval(row.low, row.high)} nats "
            f"against a bar of {fmt(row.bar)}); on their own, {row.n_bases_rising} of {row.n_bases} bases keep rising, "
            f"{row.n_bases_levelling} level off, {row.n_bases_undecided} are undecided"
            + (
                f", {collapsed} collapsed"
                if (collapsed := row.n_bases - row.n_bases_rising - row.n_bases_levelling - row.n_bases_undecided)
                else ""
            )
            + f"{between}."
        )
    return text


def policy_trend_sentences(trends: pd.DataFrame) -> list[str]:
    """Per cell, the policy KL's pooled trend over bases by the probe KL's rule (docs/study.md, "The policy KL's
    trend"), with the per-base verdicts counted."""
    return [
        f"{method_label(r.method)}, {r.regime} at lr {lr_tag(r.lr)}, over {r.n_bases} bases: its policy KL (on its own "
        f"samples) {trend_phrase(r.late_trend)} (pooled last-half rise {fmt(r.late_rise)} {interval(r.low, r.high)} "
        f"nats against a bar of {fmt(r.bar)}, final {fmt(r.final_policy_kl)} nats); on their own, {r.n_bases_rising} "
        f"of {r.n_bases} bases keep rising, {r.n_bases_levelling} level off, {r.n_bases_undecided} are undecided."
        for r in trends.itertuples(index=False)
    ]


def base_paired_sentence(row: pd.Series) -> str:
    """KTO-S minus KTO pooled over bases, paired on each (base, seed), in words."""
    label, unit = {
        "final_probe_kl": ("final probe KL", " nats"),
        "late_rise": ("last-half rise of the probe KL", " nats"),
        "quality": ("task accuracy at the end", ""),
        "late_update_norm": ("update norm per step over the last half", ""),
    }[row["metric"]]
    if row["low"] > 0:
        call = "KTO-S is higher"
    elif row["high"] < 0:
        call = "KTO-S is lower"
    else:
        call = "the data do not decide"
    if (row["low"] > 0 or row["high"] < 0) and row["t_low"] <= 0 <= row["t_high"]:
        call += f" by the bootstrap, though the t-interval over the {row['n_bases']} base means includes 0"
    return (
        f"{row['regime']} at lr {lr_tag(row['lr'])}, {label}, KTO-S minus KTO over {row['n_bases']} bases "
        f"({row['n_pairs']} paired seeds): {fmt(row['diff'])}{unit} {interval(row['low'], row['high'])} "
        f"(two-level bootstrap; t over base means [{fmt(row['t_low'])}, {fmt(row['t_high'])}]), {pct(row['rel'])} of "
        f"KTO's {fmt(row['kto_mean'])}; lower on {row['n_bases_lower']} of {row['n_bases']} bases and "
        f"{row['n_pairs_lower']} of {row['n_pairs']} seeds: {call}. Between bases the difference varies with sd "
        f"{fmt(row['sd_bases'])}, between seeds on a base {fmt(row['sd_seeds'])}; {row['n_bases']} bases detect "
        f"{fmt(row['mde'])}{unit} with 80% power."
    )


def seed_set_sentences(table: pd.DataFrame) -> list[str]:
    """Base against seed: the two seed sets on each base, per method, for the last-half rise and final KL."""
    text = []
    for row in table[table["metric"].isin(["late_rise", "final_probe_kl"])].itertuples(index=False):
        what = "last-half rise" if row.metric == "late_rise" else "final probe KL"
        text.append(
            f"Base against seed, {method_label(row.method)} at lr {lr_tag(row.lr)} on base {row.base}: {what} "
            f"{fmt(row.mean_a)} (sd {fmt(row.sd_a)}, seeds {row.set_a}, n = {row.n_a}) against {fmt(row.mean_b)} (sd "
            f"{fmt(row.sd_b)}, seeds {row.set_b}, n = {row.n_b}) nats, Welch {p_value(row.welch_p)}."
        )
    return text


def prediction_sentences(predictions: pd.DataFrame) -> list[str]:
    """The size law's predictions, one sentence per method and size."""
    text = []
    for (method, size), grp in predictions.groupby(["method", "size"], sort=False):
        parts = [
            f"{fmt(r.predicted_final_probe_kl)} [{fmt(r.low)}, {fmt(r.high)}] nats at lr {lr_tag(r.lr)}"
            for r in grp.itertuples(index=False)
        ]
        text.append(
            f"Size law, predicted for {method_label(method)} at {size} ({int(grp['params'].iat[0]):,} parameters; "
            f"fitted on {int(grp['n_cells'].iat[0])} cells of {fmt(grp['fit_params_low'].iat[0] / 1e6)}M to "
            f"{fmt(grp['fit_params_high'].iat[0] / 1e6)}M): final probe KL " + " and ".join(parts) + "."
        )
    return text


def _against_null(r: Any) -> str:
    """Whether a held prediction counts: only where the no-growth null falls outside its interval."""
    if not np.isfinite(r.null_final_probe_kl):
        return ""
    null = f"; the no-growth null ({fmt(r.null_final_probe_kl)}, the largest fitted size carried forward)"
    if r.null_holds:
        return null + " lies inside the interval too, so the size law is not tested here"
    return null + " falls outside it" + (", so the prediction counts" if r.holds else "")


def observed_sentences(check: pd.DataFrame) -> list[str]:
    """Each prediction made before the runs against what they gave, and against the no-growth null."""
    return [
        f"Predicted before the runs, {method_label(r.method)} at {r.size}, lr {lr_tag(r.lr)}: final probe KL "
        f"{fmt(r.predicted_final_probe_kl)} [{fmt(r.low)}, {fmt(r.high)}] nats; observed "
        f"{fmt(r.observed_final_probe_kl)} (base means {fmt(r.observed_low)} to {fmt(r.observed_high)}, "
        f"{r.n_bases} base(s), {r.n_runs} runs): the prediction {'holds' if r.holds else 'fails'}{_against_null(r)}."
        for r in check.itertuples(index=False)
    ]


def driver_sentence(fit: pd.DataFrame) -> str:
    """What the fit says drives the final KL: the step, the size at a given step, both, or neither."""
    parts = []
    for method, grp in fit.groupby("method"):
        terms = grp.set_index("term")
        u, p = terms.loc["log_update_norm"], terms.loc["log_params"]
        # with bases recorded, the base is the unit (cluster-robust intervals); else runs, as before bases were
        clustered = np.isfinite(p["base_low"])
        lo, hi = ("base_low", "base_high") if clustered else ("low", "high")
        step = u[lo] > 0
        size = p[lo] > 0 or p[hi] < 0
        reading = {(True, False): "the step drives it; size adds nothing detectable at a given step",
                   (True, True): "both the step and the size at a given step matter",
                   (False, True): "the size matters at a given step, the step does not",
                   (False, False): "neither term is distinguishable from 0"}[(bool(step), bool(size))]  # fmt: skip
        parts.append(
            f"{method}: log K(T) rises {u['coef']:.2f} [{u[lo]:.2f}, {u[hi]:.2f}] per unit log update norm and "
            f"{p['coef']:.2f} [{p[lo]:.2f}, {p[hi]:.2f}] per unit log parameter count (R² {u['r2']:.2f}, "
            f"{int(u['n'])} runs"
            + (f" of {int(u['n_bases'])} bases, the base as the unit" if clustered else ", seeds as independent")
            + f"): {reading}"
        )
    return "; ".join(parts) if parts else ""
