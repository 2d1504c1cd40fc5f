r"""The findings on a study's headline cell in words, one function per kind of sentence, each built from numbers
in the tables (:mod:`ktos.study.readings.analysis`): the paired comparisons, the regime and its trend, the cells that
show the contrast, stability and the notes' claims."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ....loss_types import KTO, KTO_S, KTO_ZERO
from ....runnames import lr_tag, method_label
from ...readings.analysis import Criteria
from ...readings.trend_rules import contrast_cell, contrast_cells
from .numbers import fmt, p_value, pct, trend_phrase


def paired_sentence(row: pd.Series, unit: str, margin: float) -> str:
    """One paired comparison in words: means, difference with interval, ratio, sign test, call, power."""
    ratio = ""
    if "kl" in row["metric"] and np.isfinite(row["ratio_median"]):
        ratio = (
            f"; per-seed ratio KTO-S/KTO median {fmt(row['ratio_median'])} "
            f"(range {fmt(row['ratio_min'])} to {fmt(row['ratio_max'])})"
        )
    call = {
        "lower": "KTO-S is lower",
        "higher": "KTO-S is higher",
        "equivalent": f"equivalent within ±{100 * margin:.0f}% of KTO's mean",
        "undecided": f"neither a difference nor equivalence within ±{100 * margin:.0f}% is shown",
        "too few seeds": "too few paired seeds to compare",
    }[row["call"]]
    return (
        f"{row['label']}: KTO-S {fmt(row['mean_b'])} against KTO {fmt(row['mean_a'])}{unit}, paired difference "
        f"{fmt(row['diff'])} [{fmt(row['diff_low'])}, {fmt(row['diff_high'])}] ({pct(row['rel'])} "
        f"[{pct(row['rel_low'])}, {pct(row['rel_high'])}] of KTO's mean){ratio}; KTO-S lower in {row['n_lower']} "
        f"of {row['n']} seeds (sign test {p_value(row['sign_p'])}): {call}. The smallest difference {row['n']} "
        f"seeds detect with 80% power is {fmt(row['mde'])}{unit} ({100 * abs(row['mde_rel']):.0f}% of KTO's mean)."
    )


def _cell(cells: pd.DataFrame, regime: str, method: str, lr: float) -> pd.Series | None:
    hit = cells[(cells["regime"] == regime) & (cells["method"] == method) & np.isclose(cells["lr"], lr)]
    return hit.iloc[0] if len(hit) else None


def regime_sentence(cells: pd.DataFrame, regime: str, lr: float, phase_end: int | None = None) -> str:
    """Whether KTO's mean probe KL runs away in a cell (over the runaway phase too), with its increments."""
    kto = _cell(cells, regime, KTO, lr)
    if kto is None:
        return f"The table has no KTO runs in regime {regime} at lr {lr_tag(lr)}."
    phase = ""
    if phase_end:
        verb = "runs away" if kto["phase_runaway"] else "does not run away"
        phase = (
            f"Over the first {phase_end} steps, KTO's mean probe KL {verb} in regime {regime} at lr {lr_tag(lr)}: it "
            f"rises {fmt(kto['phase_d_mid'])} nats over the middle third of those steps and {fmt(kto['phase_d_last'])} "
            f"over the last, to {fmt(kto['phase_probe_kl'])} nats at step {phase_end}. "
        )
    parts = [phase]
    for method in (KTO, KTO_S):
        cell = _cell(cells, regime, method, lr)
        if cell is None:
            continue
        verb = "runs away" if cell["runaway"] else "does not run away"
        parts.append(
            f"In regime {regime} (β {fmt(cell['beta'])}, {int(cell['max_steps'])} steps) at lr {lr_tag(lr)}, "
            f"{method_label(method)}'s mean probe KL {verb} by the runaway rule: it rises {fmt(cell['d_mid'])} nats "
            f"over the middle third of training and {fmt(cell['d_last'])} over the last "
            f"({int(cell['n_runaway_seeds'])} of {int(cell['n'])} seeds run away on their own), to "
            f"{fmt(cell['final_probe_kl'])} ± "
            f"{fmt(cell['final_probe_kl_ci95'], 2)} nats at the end. "
        )
    return "".join(parts).strip()


def trend_sentence(cells: pd.DataFrame, regime: str, lr: float) -> str:
    """Whether each method's KL keeps rising or levels off over the last half of training (docs/study.md)."""
    parts = []
    for method in (KTO, KTO_S, KTO_ZERO):
        cell = _cell(cells, regime, method, lr)
        if cell is None or "late_trend" not in cell:
            continue
        parts.append(
            f"{method_label(method)}'s probe KL {trend_phrase(cell['late_trend'])} over the last half of training "
            f"(rise "
            f"{fmt(cell['late_rise'])} [{fmt(cell['late_rise_low'])}, {fmt(cell['late_rise_high'])}] nats, "
            f"{100 * cell['late_share']:.0f}% of its final {fmt(cell['final_probe_kl'])}; "
            f"{int(cell['n_rising_seeds'])} of {int(cell['n'])} seeds keep rising and "
            f"{int(cell['n_levelling_seeds'])} level off on their own)"
        )
    return ("At lr " + lr_tag(lr) + " in " + regime + ": " + "; ".join(parts) + ".") if parts else ""


def contrast_sentence(cells: pd.DataFrame) -> str:
    """Which cells show the contrast (KTO keeps rising, KTO-S levels off) and which one the headline rule picks."""
    hits = contrast_cells(cells)
    pair = cells[cells["method"].isin([KTO, KTO_S])].groupby(["regime", "lr"])["method"].nunique()
    n_pairs = int((pair == 2).sum())
    if n_pairs == 0:
        return ""
    if hits.empty:
        return f"In none of the {n_pairs} cells with both methods does KTO's KL keep rising while KTO-S's levels off."
    pick = contrast_cell(cells)
    assert pick is not None  # there are hits
    where = ", ".join(f"{r.regime} at lr {lr_tag(r.lr)}" for r in hits.itertuples(index=False))
    return (
        f"KTO's KL keeps rising while KTO-S's levels off in {len(hits)} of {n_pairs} cells with both "
        f"methods ({where}); the least aggressive is {pick['regime']} at lr {lr_tag(pick['lr'])}."
    )


def stability_sentence(runs: pd.DataFrame, regime: str, lr: float, criteria: Criteria) -> str:
    """How many runs of each method are stable by docs/study.md's criterion, and why the others are not."""
    parts = []
    for method in (KTO_S, KTO):
        sub = runs[(runs["regime"] == regime) & (runs["method"] == method) & np.isclose(runs["lr"], lr)]
        if sub.empty:
            continue
        why = [
            f"{int((~sub[c]).sum())} {text}"
            for c, text in (
                ("below_threshold", f"crossed {fmt(criteria.threshold)} nats"),
                ("not_below_zero", "fell below zero beyond noise"),
                ("accuracy_kept", "lost accuracy below the base model's"),
            )
            if (~sub[c]).any()
        ]
        parts.append(
            f"{method_label(method)} {int(sub['stable'].sum())} of {len(sub)}" + (f" ({', '.join(why)})" if why else "")
        )
    return (
        f"Stable (probe KL below {fmt(criteria.threshold)} nats through step {criteria.window}, never below zero "
        f"beyond noise, accuracy kept): " + "; ".join(parts) + "."
    )


def claim_below_threshold(runs: pd.DataFrame, criteria: Criteria) -> str:
    """The plan note's claim "KTO-S keeps KL below τ through the window at β" (``criteria``: 0.1, step 20, β 0.2),
    on the table's runs at that β."""
    beta = criteria.beta
    sub = runs[np.isclose(runs["beta"], beta) & (runs["status"] != "diverged")]
    if sub.empty or KTO_S not in set(sub["method"]):
        return (
            f"The claim that KTO-S keeps KL below {fmt(criteria.threshold)} through step {criteria.window} at "
            f"β {beta:g} is not tested here (no KTO-S runs at β {beta:g})."
        )
    counts = {
        m: (int((g["max_window_probe_kl"] < criteria.threshold).sum()), len(g), g["window_probe_kl"].mean())
        for m, g in sub.groupby("method")
    }
    s_ok, s_n, s_kl = counts[KTO_S]
    text = (
        f"The plan note's claim \"KTO-S keeps KL below {fmt(criteria.threshold)} through step {criteria.window} at "
        f'β {beta:g}": {s_ok} of {s_n} KTO-S runs at β {beta:g} keep their probe KL below it through step '
        f"{criteria.window} (mean probe KL at step {criteria.window}: {fmt(s_kl)} nats)"
    )
    if KTO in counts:
        k_ok, k_n, k_kl = counts[KTO]
        text += f", against {k_ok} of {k_n} KTO runs ({fmt(k_kl)} nats)"
    verdict = "holds" if s_ok == s_n else ("fails" if s_ok == 0 else "holds for some runs only")
    return text + f": it {verdict} here."


def claim_not_learning_rate(matched: pd.DataFrame) -> str:
    """The plan note's claim "this is not about learning rate", read from the matched-KL comparison."""
    if matched.empty:
        return (
            'The claim that the instability "is not about learning rate" needs a learning-rate grid; '
            "this table has none."
        )
    parts = []
    for row in matched.itertuples(index=False):
        if not np.isfinite(row.lr_star):
            parts.append(
                f"KTO-S at lr {lr_tag(row.lr_kto_s)} ends at probe KL {fmt(row.kto_s_final_probe_kl)} nats, outside "
                f"the range KTO's grid reaches"
            )
            continue
        if np.isfinite(row.diff_low) and row.diff_low > 0:
            reading = "better than KTO at any step size on the grid"
        elif np.isfinite(row.diff_high) and row.diff_high < 0:
            reading = "worse than KTO at the step size that matches its KL"
        else:
            reading = "no different from KTO run at that smaller step"
        parts.append(
            f"KTO-S at lr {lr_tag(row.lr_kto_s)} ends at probe KL {fmt(row.kto_s_final_probe_kl)} nats, which KTO "
            f"reaches at lr {lr_tag(row.lr_star)}; there KTO's task accuracy is {fmt(row.kto_quality_at_lr_star)} "
            f"against KTO-S's {fmt(row.kto_s_quality)}, a difference of {fmt(row.quality_diff)} "
            f"[{fmt(row.diff_low)}, {fmt(row.diff_high)}] (seed bootstrap): {reading}"
        )
    step_like = all(np.isfinite(r.diff_low) and r.diff_low <= 0 <= r.diff_high for r in matched.itertuples(index=False))
    summary = (
        "So on this grid it is about learning rate: KTO-S's KL and accuracy are those of KTO at a smaller step."
        if step_like
        else "So the effect is not just a smaller learning rate at every rate tested."
    )
    return 'The plan note\'s claim "this is not about learning rate": ' + "; ".join(parts) + ". " + summary


def ratio_sentence(ratio: pd.DataFrame) -> str:
    """Whether KTO-S's KL relative to KTO's falls over training (a KL-adaptive brake) or stays flat."""
    ratio = ratio.dropna(subset=["median_ratio"])
    if len(ratio) < 3:
        return ""
    end = ratio["step"].max()
    early = ratio.iloc[(ratio["step"] - end / 3).abs().argmin()]
    late = ratio.iloc[-1]
    return (
        f"The paired ratio of probe KL, KTO-S over KTO (median over seeds), is {fmt(early['median_ratio'])} at step "
        f"{int(early['step'])} and {fmt(late['median_ratio'])} at step {int(late['step'])}."
    )
