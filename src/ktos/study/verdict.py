r"""The verdict, computed from the study's tables (:mod:`ktos.study.analysis`), and the writer of every table file.

Every sentence is generated from numbers in the tables (:mod:`ktos.study.sentences`); none is written by hand.
:func:`write_tables` writes ``verdict.md`` and every table :func:`ktos.study.outputs.table_names` names, one
``<name>.csv`` each (``ktos tables``): the per-run, per-cell and paired tables, checkpoints, the KL ratio, the
envelope and early stopping (their header alone when a study has neither), the size law's tables, and the
pooled tables over bases, the seed-set comparison and the checked predictions when the study has them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analysis import (
    Criteria,
    cell_summary,
    headline,
    headline_cell,
    kl_ratio_over_time,
    matched_kl,
    paired_table,
    run_summary,
)
from .base_factor import pooled_cells, pooled_paired, pooled_trends, seed_set_table
from .frontier import EARLY_STOPPING_COLUMNS, ENVELOPE_COLUMNS, early_stopping_table, envelope_table
from .frontier import checkpoints as trajectory_checkpoints
from .frontier_sentences import frontier_sentences, matched_frontier_sentences
from .matched_frontier import frontier_tables, has_item_frontier, read_run_infos
from .outputs import table_names
from .rundir import read_table
from .runnames import lr_tag, method_label
from .scale import check_predictions, driver_sentence, drivers, scale_table, size_fit, size_predictions
from .sentences import (
    base_paired_sentence,
    base_trend_sentences,
    claim_below_threshold,
    claim_not_learning_rate,
    contrast_sentence,
    fmt,
    observed_sentences,
    paired_sentence,
    prediction_sentences,
    ratio_sentence,
    regime_sentence,
    seed_set_sentences,
    stability_sentence,
    trend_sentence,
)

log = logging.getLogger(__name__)


def headline_verdict(tables: dict[str, pd.DataFrame], regime: str, lr: float, criteria: Criteria) -> list[str]:
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


def base_verdict(tables: dict[str, pd.DataFrame]) -> list[str]:
    """The findings of a study over several bases (third amendment): each cell's pooled trend with the per-base
    verdicts, the pooled paired differences, and the size law fitted over bases."""
    text = base_trend_sentences(tables["base_trends"], tables["base_cells"])
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
    kto = cells[cells["method"] == "kto"]
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


def checkpoint_table(df: pd.DataFrame, steps: Sequence[int]) -> pd.DataFrame:
    """Mean probe KL and logged kl across the non-diverged seeds of each regime x method x lr at ``steps``."""
    sub = df[df["step"].isin(steps) & (df["status"] != "diverged")]
    out = sub.groupby(["regime", "method", "lr", "step"])[["probe_kl", "kl"]].agg(["mean", "std", "count"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    return out.reset_index()


def _one_base_tables(
    df: pd.DataFrame, *, regime: str | None, lr: float | None, criteria: Criteria, checkpoints: Sequence[int]
) -> dict[str, pd.DataFrame]:
    """Every per-cell table of a study's runs from one base model (docs/study.md's rules before the third
    amendment: seeds are the unit)."""
    runs = run_summary(df, criteria)
    tables = {
        "runs": runs,
        "cells": cell_summary(df, runs, criteria),
        "paired": paired_table(runs, criteria),
        "matched_kl": matched_kl(runs),
        "checkpoints": checkpoint_table(df, checkpoints),
    }
    tables["kl_ratio"] = kl_ratio_over_time(df, regime, lr) if regime is not None and lr is not None else pd.DataFrame()
    cp = trajectory_checkpoints(df, regime) if regime is not None else None
    compared = cp is not None and len(cp.methods) > 1
    tables["envelope"] = envelope_table(cp) if compared else pd.DataFrame(columns=ENVELOPE_COLUMNS)
    tables["early_stopping"] = early_stopping_table(cp) if compared else pd.DataFrame(columns=EARLY_STOPPING_COLUMNS)
    tables["scale"] = scale_table(tables["cells"], runs)
    tables["drivers"] = drivers(runs)
    return tables


def _with_base(table: pd.DataFrame, base: str) -> pd.DataFrame:
    """``table`` with a first column ``base``."""
    return table.drop(columns="base", errors="ignore").assign(base=base)[
        ["base", *table.columns.drop("base", errors="ignore")]
    ]


def build_tables(
    df: pd.DataFrame,
    *,
    regime: str | None,
    lr: float | None,
    criteria: Criteria,
    checkpoints: Sequence[int],
    run_infos: list[dict[str, Any]] | None = None,
) -> dict[str, pd.DataFrame]:
    """Every table of the study from the tidy trajectory table. Each per-cell table is computed on each base's
    runs and has a ``base`` column; with two or more bases the pooled tables of
    :mod:`ktos.study.base_factor` (``base_cells``, ``base_trends``, ``base_paired``) judge each cell over bases
    and seeds. The size law (``size_fit``, ``size_predictions``) is fitted over every base's cells. With the runs'
    records (``run_infos``) holding each held-out item's outcome, ``best_checkpoint`` and ``frontier``
    (:mod:`ktos.study.matched_frontier`) read the frontier at matched KL over bases, seeds and items."""
    names = sorted(df["base"].dropna().unique())
    parts = [(name, df[df["base"] == name]) for name in names] or [(None, df)]
    per_base = [(name, _one_base_tables(part, regime=regime, lr=lr, criteria=criteria, checkpoints=checkpoints))
                for name, part in parts]  # fmt: skip
    if names:
        tables = {
            key: pd.concat(
                [_with_base(t[key], name) for name, t in per_base if not t[key].empty] or [per_base[0][1][key]]
            )
            for key in per_base[0][1]
        }
    else:  # a table from before bases were recorded
        tables = per_base[0][1]
    # the runs of every base, with the base from the table (the analyses group by it)
    tables["drivers"] = drivers(tables["runs"]) if len(names) > 1 else tables["drivers"]
    tables["size_fit"] = size_fit(tables["scale"])
    tables["size_predictions"] = size_predictions(tables["scale"])
    if len(names) > 1:
        runs = tables["runs"]
        tables["base_cells"] = pooled_cells(runs)
        tables["base_trends"] = pooled_trends(runs, tables["cells"], criteria.threshold)
        tables["base_paired"] = pooled_paired(runs)
    if criteria.seed_sets:
        tables["seed_sets"] = seed_set_table(tables["runs"], dict(criteria.seed_sets))
    if criteria.predictions:
        tables["predictions_observed"] = check_predictions(tables["scale"], pd.read_csv(criteria.predictions))
    if has_item_frontier(df) and regime is not None:
        tables.update(frontier_tables(df, run_infos or [], regime))
    return tables


def write_tables(
    table_csv: str | Path,
    out_dir: str | Path,
    *,
    regime: str | None = None,
    lr: float | None = None,
    checkpoints: Sequence[int] = (5, 10, 15, 20),
    run_info: str | Path | None = None,
    **criteria: Any,
) -> list[Path]:
    """Write every table and ``verdict.md`` for the headline cell (``regime``, ``lr``; default: the first
    regime and the learning rate with the most runs) into ``out_dir``; ``criteria`` are
    :class:`~ktos.study.analysis.Criteria`'s fields (threshold, window, margin, phase_end, beta,
    search_steps, arms). ``run_info``: the runs' records (``ktos extract-kl --run-info``), for the tables that
    need each held-out item's outcome. Returns the paths."""
    df = read_table(table_csv)
    regime, lr = headline(df, regime, lr)
    criteria = Criteria(**criteria)
    infos = read_run_infos(run_info) if run_info else None
    tables = build_tables(df, regime=regime, lr=lr, criteria=criteria, checkpoints=checkpoints, run_infos=infos)
    names = table_names(
        several_bases=df["base"].dropna().nunique() > 1,
        seed_sets=bool(criteria.seed_sets),
        predictions=bool(criteria.predictions),
        item_frontier=has_item_frontier(df),
    )
    if set(names) != set(tables):
        raise RuntimeError(f"built tables {sorted(tables)}, but ktos.study.outputs.table_names names {names}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        if tables[name].columns.empty:
            raise RuntimeError(f"table {name} has no columns: it would be written as an empty file")
        path = out / f"{name}.csv"
        tables[name].to_csv(path, index=False)
        paths.append(path)
    if "base_trends" in tables:
        findings = base_verdict(tables)
    elif set(df["method"]) == {"kto"}:
        findings = search_verdict(tables["cells"], criteria)
    else:
        findings = headline_verdict(tables, regime, lr, criteria)
    if "seed_sets" in tables:
        findings += seed_set_sentences(tables["seed_sets"])
    findings += prediction_sentences(tables["size_predictions"])
    if "predictions_observed" in tables:
        findings += observed_sentences(tables["predictions_observed"])
    if "frontier" in tables and not tables["frontier"].empty:
        findings += matched_frontier_sentences(tables["best_checkpoint"], tables["frontier"])
    text = [
        "# Verdict",
        "",
        f"Headline cell: {regime} at lr {lr_tag(lr)}. One finding per line, computed from the tables beside this file.",
        "",
    ]
    text += [f"- {finding}" for finding in findings]
    (out / "verdict.md").write_text("\n".join(text) + "\n")
    paths.append(out / "verdict.md")
    log.info("wrote %d tables to %s", len(paths), out)
    return paths
