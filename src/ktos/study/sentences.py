r"""The study's findings in words: one function per kind of sentence, each built from numbers in the tables
(:mod:`ktos.study.analysis`); :mod:`ktos.study.verdict` assembles them into ``verdict.md``.

Numbers are printed to 3 significant digits (:func:`fmt`), fractions as signed percentages (:func:`pct`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .analysis import Criteria
from .runnames import lr_tag, method_label
from .trends import contrast_cell, contrast_cells


def fmt(x: float, digits: int = 3) -> str:
    """A number in ``digits`` significant digits; ``—`` for NaN."""
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def pct(x: float) -> str:
    """A fraction as a signed percentage."""
    return "—" if not np.isfinite(x) else f"{100 * x:+.1f}%"


def _p(p: float) -> str:
    """``p = 0.012`` or ``p < 0.001``."""
    return "p = —" if not np.isfinite(p) else (f"p = {p:.2g}" if p >= 0.001 else "p < 0.001")


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
        f"of {row['n']} seeds (sign test {_p(row['sign_p'])}): {call}. The smallest difference {row['n']} "
        f"seeds detect with 80% power is {fmt(row['mde'])}{unit} ({100 * abs(row['mde_rel']):.0f}% of KTO's mean)."
    )


def _cell(cells: pd.DataFrame, regime: str, method: str, lr: float) -> pd.Series | None:
    hit = cells[(cells["regime"] == regime) & (cells["method"] == method) & np.isclose(cells["lr"], lr)]
    return hit.iloc[0] if len(hit) else None


def regime_sentence(cells: pd.DataFrame, regime: str, lr: float, phase_end: int | None = None) -> str:
    """Whether KTO's mean probe KL runs away in a cell (over the runaway phase too), with its increments."""
    kto = _cell(cells, regime, "kto", lr)
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
    for method in ("kto", "kto_s"):
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
    for method in ("kto", "kto_s", "kto_zero"):
        cell = _cell(cells, regime, method, lr)
        if cell is None or "late_trend" not in cell:
            continue
        parts.append(
            f"{method_label(method)}'s probe KL {cell['late_trend']} over the last half of training (rise "
            f"{fmt(cell['late_rise'])} [{fmt(cell['late_rise_low'])}, {fmt(cell['late_rise_high'])}] nats, "
            f"{100 * cell['late_share']:.0f}% of its final {fmt(cell['final_probe_kl'])}; "
            f"{int(cell['n_rising_seeds'])} of {int(cell['n'])} seeds keep rising and "
            f"{int(cell['n_levelling_seeds'])} level off on their own)"
        )
    return ("At lr " + lr_tag(lr) + " in " + regime + ": " + "; ".join(parts) + ".") if parts else ""


def contrast_sentence(cells: pd.DataFrame) -> str:
    """Which cells show the contrast (KTO keeps rising, KTO-S levels off) and which one the headline rule picks."""
    hits = contrast_cells(cells)
    pair = cells[cells["method"].isin(["kto", "kto_s"])].groupby(["regime", "lr"])["method"].nunique()
    n_pairs = int((pair == 2).sum())
    if n_pairs == 0:
        return ""
    if hits.empty:
        return f"In none of the {n_pairs} cells with both methods does KTO's KL keep rising while KTO-S's levels off."
    pick = contrast_cell(cells)
    where = ", ".join(f"{r.regime} at lr {lr_tag(r.lr)}" for r in hits.itertuples(index=False))
    return (
        f"KTO's KL keeps rising while KTO-S's levels off in {len(hits)} of {n_pairs} cells with both "
        f"methods ({where}); the least aggressive is {pick['regime']} at lr {lr_tag(pick['lr'])}."
    )


def stability_sentence(runs: pd.DataFrame, regime: str, lr: float, criteria: Criteria) -> str:
    """How many runs of each method are stable by docs/study.md's criterion, and why the others are not."""
    parts = []
    for method in ("kto_s", "kto"):
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
    if sub.empty or "kto_s" not in set(sub["method"]):
        return (
            f"The claim that KTO-S keeps KL below {fmt(criteria.threshold)} through step {criteria.window} at "
            f"β {beta:g} is not tested here (no KTO-S runs at β {beta:g})."
        )
    counts = {
        m: (int((g["max_window_probe_kl"] < criteria.threshold).sum()), len(g), g["window_probe_kl"].mean())
        for m, g in sub.groupby("method")
    }
    s_ok, s_n, s_kl = counts["kto_s"]
    text = (
        f"The plan note's claim \"KTO-S keeps KL below {fmt(criteria.threshold)} through step {criteria.window} at "
        f'β {beta:g}": {s_ok} of {s_n} KTO-S runs at β {beta:g} keep their probe KL below it through step '
        f"{criteria.window} (mean probe KL at step {criteria.window}: {fmt(s_kl)} nats)"
    )
    if "kto" in counts:
        k_ok, k_n, k_kl = counts["kto"]
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


def base_trend_sentences(trends: pd.DataFrame, cells: pd.DataFrame) -> list[str]:
    """Per regime x learning rate and method, the pooled trend over bases (third amendment) with the per-base
    verdicts counted, and the spread of the final KL between bases against that between seeds."""
    text = []
    kl = cells[cells["metric"] == "final_probe_kl"].set_index(["regime", "method", "lr"])
    for row in trends.itertuples(index=False):
        spread = kl.loc[(row.regime, row.method, row.lr)] if (row.regime, row.method, row.lr) in kl.index else None
        between = (
            f"; final probe KL {fmt(spread['mean'])} [{fmt(spread['low'])}, {fmt(spread['high'])}] nats, base means "
            f"{fmt(spread['base_min'])} to {fmt(spread['base_max'])} (sd {fmt(spread['sd_bases'])} between bases, "
            f"{fmt(spread['sd_seeds'])} between seeds on a base)"
            if spread is not None
            else ""
        )
        text.append(
            f"{method_label(row.method)}, {row.regime} at lr {lr_tag(row.lr)}, over {row.n_bases} bases: its KL "
            f"{row.late_trend} (pooled last-half rise {fmt(row.late_rise)} [{fmt(row.low)}, {fmt(row.high)}] nats "
            f"against a bar of {fmt(row.bar)}); on their own, {row.n_bases_rising} of {row.n_bases} bases keep rising, "
            f"{row.n_bases_levelling} level off, {row.n_bases_undecided} are undecided{between}."
        )
    return text


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
        f"({row['n_pairs']} paired seeds): {fmt(row['diff'])}{unit} [{fmt(row['low'])}, {fmt(row['high'])}] "
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
            f"{fmt(row.sd_b)}, seeds {row.set_b}, n = {row.n_b}) nats, Welch {_p(row.welch_p)}."
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


def observed_sentences(check: pd.DataFrame) -> list[str]:
    """Each prediction made before the runs against what they gave."""
    return [
        f"Predicted before the runs, {method_label(r.method)} at {r.size}, lr {lr_tag(r.lr)}: final probe KL "
        f"{fmt(r.predicted_final_probe_kl)} [{fmt(r.low)}, {fmt(r.high)}] nats; observed "
        f"{fmt(r.observed_final_probe_kl)} (base means {fmt(r.observed_low)} to {fmt(r.observed_high)}, "
        f"{r.n_bases} base(s), {r.n_runs} runs): the prediction {'holds' if r.holds else 'fails'}."
        for r in check.itertuples(index=False)
    ]
