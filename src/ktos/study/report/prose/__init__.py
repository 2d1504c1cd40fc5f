r"""The verdict in words: the one place ``verdict.md``'s text is assembled (:func:`verdict_markdown`).

Every sentence is generated from numbers in the study's tables (:class:`ktos.study.readings.tables.StudyTables`); none
is written by hand. The sentences are built by kind in :mod:`~ktos.study.report.prose.headline` (the headline cell and
the notes' claims), :mod:`~ktos.study.report.prose.bases_and_sizes` (several bases, base against seed, the size law) and
:mod:`~ktos.study.report.prose.frontier` (the envelope, early stopping and the matched-KL frontier), numbers printed by
:mod:`~ktos.study.report.prose.numbers`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ....loss_types import KTO
from ....runnames import lr_tag, method_label
from ...readings.analysis import Criteria, headline_cell
from .bases_and_sizes import (
    base_paired_sentence,
    base_trend_sentences,
    driver_sentence,
    observed_sentences,
    policy_trend_sentences,
    prediction_sentences,
    seed_set_sentences,
)
from .frontier import curve_frontier_sentences, frontier_sentences, matched_frontier_sentences
from .headline import (
    claim_below_threshold,
    claim_not_learning_rate,
    contrast_sentence,
    paired_sentence,
    ratio_sentence,
    regime_sentence,
    stability_sentence,
    trend_sentence,
)
from .numbers import fmt


def headline_verdict(tables: Mapping[str, pd.DataFrame], regime: str, lr: float, criteria: Criteria) -> list[str]:
    """The findings on the headline cell and the notes' claims, one per item."""
    cells, runs, pairs = tables["cells"], tables["runs"], tables["paired"]
    text = [
        contrast_sentence(cells),
        regime_sentence(cells, regime, lr, criteria.phase_end),
        trend_sentence(cells, regime, lr),
    ]
    here = pairs[(pairs["regime"] == regime) & np.isclose(pairs["lr"], lr)].set_index("metric")
    if here.empty:
        text.append("No paired KTO-S runs: nothing to compare.")
    else:
        units = {m: (" nats" if "kl" in m or "rise" in m else "") for m in here.index}
        order = (
            "final_probe_kl", "late_rise", "final_kl", "quality", "late_update_norm", "late_grad_norm",
            "phase_probe_kl", "phase_quality", "window_probe_kl", "window_quality",
        )  # fmt: skip
        for metric in order:
            if metric in here.index:
                row = here.loc[metric].copy()
                row["metric"] = metric
                text.append(paired_sentence(row, units[metric], criteria.margin))
        text.append(ratio_sentence(tables["kl_ratio"]))
    text.append(stability_sentence(runs, regime, lr, criteria))
    text.append(claim_below_threshold(runs, criteria))
    if not tables["matched_kl"].empty:
        text.append(claim_not_learning_rate(tables["matched_kl"]))
    text.extend(frontier_sentences(tables["envelope"], tables["early_stopping"]))
    text.append(driver_sentence(tables["drivers"]))
    for arm, what in criteria.arms.items():
        arm_pairs = pairs[
            (pairs["regime"] == arm) & (pairs["metric"].isin(["final_probe_kl", "quality", "late_update_norm"]))
        ]
        for row in arm_pairs.itertuples(index=False):
            text.append(
                f"Mechanism arm, {what} (lr {lr_tag(row.lr)}): "
                + paired_sentence(pd.Series(row._asdict()), " nats" if "kl" in row.metric else "", criteria.margin)
            )
    return [t for t in text if t]


def base_verdict(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """The findings of a study over several bases (third amendment): each cell's pooled trend with the per-base
    verdicts, the pooled paired differences, and the size law fitted over bases."""
    text = base_trend_sentences(tables["base_trends"], tables["base_cells"])
    if "policy_trends" in tables:
        text += policy_trend_sentences(tables["policy_trends"])
    pairs = tables["base_paired"]
    for metric in ("final_probe_kl", "late_rise", "quality", "late_update_norm"):
        text += [base_paired_sentence(row) for _, row in pairs[pairs["metric"] == metric].iterrows()]
    fit = tables["size_fit"]
    for method, grp in fit.groupby("method"):
        terms = grp.set_index("term")
        text.append(
            f"Size law for {method_label(method)} over {int(terms['n'].iat[0])} base x size x rate cells: log final "
            f"probe KL rises {fmt(terms.loc['log_lr', 'coef'])} [{fmt(terms.loc['log_lr', 'low'])}, "
            f"{fmt(terms.loc['log_lr', 'high'])}] per unit log lr and {fmt(terms.loc['log_params', 'coef'])} "
            f"[{fmt(terms.loc['log_params', 'low'])}, {fmt(terms.loc['log_params', 'high'])}] per unit log parameter "
            f"count at a fixed lr (R² {fmt(terms['r2'].iat[0])})."
        )
    if driver_sentence(tables["drivers"]):
        text.append("At a fixed update norm: " + driver_sentence(tables["drivers"]) + ".")
    return text


def seeds_per_cell(cells: pd.DataFrame) -> str:
    """``"3 seeds"``, or ``"2 to 3 seeds"`` when the cells' seed counts differ."""
    low, high = int(cells["n"].min()), int(cells["n"].max())
    return f"{high} seed{'s' * (high != 1)}" if low == high else f"{low} to {high} seeds"


def search_verdict(cells: pd.DataFrame, criteria: Criteria) -> list[str]:
    """The regime search in words: which KTO cells run away, and the headline rule's pick."""
    kto = cells[cells["method"] == KTO]
    away = kto[kto["runaway"]]
    text = [
        f"KTO's mean probe KL runs away (docs/study.md) in {len(away)} of {len(kto)} cells (regime x learning rate)."
    ]
    for steps, grp in kto.groupby("max_steps"):
        n_away = int(grp["runaway"].sum())
        text.append(f"At {int(steps)} steps: {n_away} of {len(grp)}.")
    steps = criteria.search_steps
    pick = headline_cell(cells, beta=criteria.beta, steps=steps)
    if pick is None:
        text.append(f"No {steps}-step cell runs away at any β: the rule picks no {steps}-step headline cell.")
        shorter = sorted(s for s in away["max_steps"].unique() if s < steps)
        if shorter:
            pick = headline_cell(cells, beta=criteria.beta, steps=int(shorter[-1]))
            text.append(f"The longest length under {steps} steps at which cells run away is {int(shorter[-1])} steps.")
    if pick is not None:
        text.append(
            f"The headline rule picks {pick['regime']} at lr {lr_tag(pick['lr'])}: final probe KL "
            f"{fmt(pick['final_probe_kl'])} nats, task accuracy {fmt(pick['quality'])} (base "
            f"{fmt(pick['base_quality'])})."
        )
    trends = kto["late_trend"].value_counts()
    text.append(
        "Over the last half of training, KTO's mean probe KL keeps rising in "
        f"{int(trends.get('keeps rising', 0))} of {len(kto)} cells, levels off in {int(trends.get('levels off', 0))} "
        f"and is undecided in {int(trends.get('undecided', 0))} ({seeds_per_cell(kto)} a cell)."
    )
    return [" ".join(text[:-1]), text[-1]]


def findings(
    tables: Mapping[str, pd.DataFrame], *, methods: set[str], regime: str, lr: float, criteria: Criteria
) -> list[str]:
    """The verdict's findings, one per item: over bases, the regime search (a KTO-only study) or the headline
    cell, then the seed sets, the size law's predictions and their checks, and the matched-KL frontier."""
    if "base_trends" in tables:
        text = base_verdict(tables)
    elif methods == {KTO}:
        text = search_verdict(tables["cells"], criteria)
    else:
        text = headline_verdict(tables, regime, lr, criteria)
    if "seed_sets" in tables:
        text += seed_set_sentences(tables["seed_sets"])
    text += prediction_sentences(tables["size_predictions"])
    if "predictions_observed" in tables:
        text += observed_sentences(tables["predictions_observed"])
    if "frontier" in tables and not tables["frontier"].empty:
        text += matched_frontier_sentences(tables["best_checkpoint"], tables["frontier"])
    if "curve_frontier" in tables:
        text += curve_frontier_sentences(tables["curve_frontier"])
    return text


def verdict_markdown(
    tables: Mapping[str, pd.DataFrame], *, methods: set[str], regime: str, lr: float, criteria: Criteria
) -> str:
    """``verdict.md``: the headline cell, then one finding per line."""
    text = [
        "# Verdict",
        "",
        f"Headline cell: {regime} at lr {lr_tag(lr)}. One finding per line, computed from the tables beside this file.",
        "",
    ]
    text += [f"- {finding}" for finding in findings(tables, methods=methods, regime=regime, lr=lr, criteria=criteria)]
    return "\n".join(text) + "\n"
