"""Figures of the size sweep and of the whole-trajectory reading of "more than a smaller step?".

* :func:`draw_scale`: per method, the final probe KL (nats) of every size x learning rate cell against the
  learning rate (one line per size), against the measured update norm ``||dtheta||`` per step over the last
  half of training, and against the parameter count (one line per learning rate); hollow markers are cells
  whose KL levels off, filled ones cells whose KL keeps rising (:mod:`ktos.study.readings.trend_rules`).
* :func:`draw_envelope`: accuracy against probe KL for every checkpoint (learning rate x step, seed means) of
  each method, faint, and each method's envelope (best accuracy within a KL budget) with its seed-bootstrap
  band at the budgets of :data:`ktos.study.readings.checkpoint_envelope.KL_BUDGETS`.
* :func:`draw_matched_frontier`: per KL bin, each method's accuracy on items never used for choosing, and its
  difference from KTO against the equivalence margin (:mod:`ktos.study.readings.matched_frontier`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from ...loss_types import KTO, KTO_S
from ...runnames import METHOD_LABELS, lr_tag
from ..readings.checkpoint_envelope import Checkpoints, envelope_table
from ..readings.checkpoint_envelope import checkpoints as trajectory_checkpoints
from ..readings.trend_rules import LEVELS_OFF
from .figure_style import DOUBLE, KL_LABEL, PALETTE, styled


def _params_label(params: float) -> str:
    return f"{params / 1e6:.2g}M params"


@styled
def draw_scale(table: pd.DataFrame) -> Figure | None:
    """Final probe KL against learning rate, update norm and parameter count (see the module docstring)."""
    if table.empty or table["params"].nunique() < 2:
        return None
    methods = [m for m in (KTO, KTO_S) if m in set(table["method"])]
    fig = Figure(figsize=(DOUBLE, 2.3 * len(methods) + 0.4), layout="constrained")
    axes = fig.subplots(len(methods), 3, sharey="row", squeeze=False)
    sizes = sorted(table["params"].unique())
    colors = dict(zip(sizes, sns.color_palette("mako_r", len(sizes) + 1)[1:], strict=True))
    lrs = sorted(table["lr"].unique())
    lr_colors = dict(zip(lrs, sns.color_palette("flare", len(lrs)), strict=True))
    for row, method in zip(axes, methods, strict=True):
        sub = table[table["method"] == method]
        for params, grp in sub.groupby("params"):
            grp = grp.sort_values("lr")
            row[0].plot(grp["lr"], grp["final_probe_kl"], "-", color=colors[params], label=_params_label(params))
        for lr, grp in sub.groupby("lr"):
            grp = grp.sort_values("params")
            row[2].plot(grp["params"], grp["final_probe_kl"], "-", color=lr_colors[lr], label=f"lr {lr_tag(lr)}")
        for _, cell in sub.iterrows():
            face = "white" if cell["late_trend"] == LEVELS_OFF else colors[cell["params"]]
            for ax, x in ((row[0], cell["lr"]), (row[1], cell["late_update_norm"]), (row[2], cell["params"])):
                ax.plot(x, cell["final_probe_kl"], "o", ms=4, mfc=face, mec=colors[cell["params"]])
        for ax, xlabel in zip(
            row, ("peak learning rate", "update norm ||Δθ|| per step, last half", "parameters"), strict=True
        ):
            ax.set(xscale="log", yscale="log", xlabel=xlabel)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ScalarFormatter())
        row[0].set_ylabel(f"{METHOD_LABELS[method]}: final probe KL (nats)")
        row[0].legend(loc="upper left")
        row[2].legend(loc="upper left")
    fig.suptitle("Model size against step size (hollow: KL levels off over the last half; filled: not)", fontsize=8.5)
    return fig


@styled
def draw_envelope(cp: Checkpoints, envelope: pd.DataFrame) -> Figure:
    """Accuracy against probe KL over all checkpoints, each method's exact envelope (the running best accuracy
    over checkpoints sorted by KL, from the base model at KL 0), and its value at the compared budgets with
    the seed-bootstrap interval."""
    fig = Figure(figsize=(DOUBLE * 0.62, 3.0), layout="constrained")
    ax = fig.subplots()
    offsets = np.linspace(-0.06, 0.06, len(cp.methods))
    for i, method in enumerate(cp.methods):
        label, color = METHOD_LABELS[method], PALETTE[METHOD_LABELS[method]]
        kl = np.nanmean(cp.kl[i], axis=-1).ravel()
        acc = np.nanmean(cp.acc[i], axis=-1).ravel()
        ok = np.isfinite(kl) & np.isfinite(acc)
        ax.plot(kl[ok], acc[ok], ".", ms=2.5, alpha=0.35, color=color)
        order = np.argsort(kl[ok])
        xs = np.concatenate([[0.0], kl[ok][order]])
        best = np.maximum.accumulate(np.concatenate([[cp.base["acc"]], acc[ok][order]]))
        ax.step(xs, best, where="post", color=color, label=f"{label} envelope")
        env = envelope[envelope["method"] == method].sort_values("kl_budget")
        ax.errorbar(
            env["kl_budget"] + offsets[i], env["envelope"],
            yerr=[env["envelope"] - env["envelope_low"], env["envelope_high"] - env["envelope"]],
            fmt="o", ms=2.5, capsize=1.5, color=color, lw=0.8,
        )  # fmt: skip
    ax.axhline(cp.base["acc"], color="black", lw=0.7, ls="--", label="base model")
    ax.set(xlabel=KL_LABEL, ylabel="task accuracy (held-out)",
           title=f"Checkpoints (lr × step, {len(cp.seeds)}-seed means); envelope ± bootstrap 95%")  # fmt: skip
    ax.legend(loc="lower left")
    return fig


@styled
def draw_matched_frontier(frontier: pd.DataFrame, best: pd.DataFrame) -> Figure:
    """Per KL bin, each method's envelope-set accuracy at its checkpoint chosen in the bin (left), and the
    difference from KTO with the equivalence margin shaded (right); 95% three-level bootstrap intervals. The
    best checkpoints' report-set accuracies stand at the right of the left panel."""
    fig = Figure(figsize=(DOUBLE, 2.9), layout="constrained")
    left, right = fig.subplots(1, 2)
    bins = frontier[["kl_low", "kl_high"]].drop_duplicates().sort_values("kl_low")
    names = [f"{lo:g}–{hi:g}" for lo, hi in bins.itertuples(index=False)]
    methods = [m for m in METHOD_LABELS if m in set(frontier["method"])]
    offsets = np.linspace(-0.15, 0.15, len(methods))
    for i, method in enumerate(methods):
        label = METHOD_LABELS[method]
        rows = frontier[frontier["method"] == method].sort_values("kl_low")
        x = np.arange(len(rows)) + offsets[i]
        y, lo, hi = (rows[c].to_numpy(float) for c in ("envelope_accuracy", "envelope_low", "envelope_high"))
        left.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o", ms=3, capsize=2, lw=0.9, color=PALETTE[label], label=label)
        b = best[best["method"] == method].iloc[0]
        left.errorbar(len(rows) + offsets[i], b["report_accuracy"], fmt="s", ms=3, capsize=2, lw=0.9,
                      yerr=[[b["report_accuracy"] - b["report_low"]], [b["report_high"] - b["report_accuracy"]]],
                      color=PALETTE[label])  # fmt: skip
        if method == KTO:
            continue
        d, dlo, dhi = (rows[c].to_numpy(float) for c in ("diff_vs_kto", "diff_low", "diff_high"))
        right.errorbar(x, d, yerr=[d - dlo, dhi - d], fmt="o", ms=3, capsize=2, lw=0.9, color=PALETTE[label],
                       label=f"{label} − KTO")  # fmt: skip
    margin = float(frontier["margin"].iat[0])
    right.axhspan(-margin, margin, color="0.85", lw=0, label=f"equivalence margin ±{margin:g}")
    right.axhline(0, color="black", lw=0.6)
    left.set_xticks(range(len(names) + 1), [*names, "best\n(report)"])
    right.set_xticks(range(len(names)), names)
    left.set(xlabel=KL_LABEL + " bin", ylabel="task accuracy (envelope items)", title="Best checkpoint per KL bin")
    right.set(xlabel=KL_LABEL + " bin", ylabel="accuracy difference", title="Difference from KTO at matched KL")
    left.legend(loc="lower left")
    right.legend(loc="lower left")
    return fig


def envelope_figure(df: pd.DataFrame, regime: str) -> Figure | None:
    """The envelope figure of ``regime`` when its runs measured validation/test accuracy along the way. Its
    bootstrap (500 draws) is the figure's own: the ``envelope`` table's has 2000."""
    cp = trajectory_checkpoints(df, regime)
    if cp is None or len(cp.methods) < 2:
        return None
    return draw_envelope(cp, envelope_table(cp, n_boot=500))


def matched_frontier_figure(tables: Mapping[str, pd.DataFrame]) -> Figure | None:
    """The matched-KL frontier figure from the study's ``frontier`` and ``best_checkpoint`` tables
    (:class:`ktos.study.readings.tables.StudyTables`: the runs' records held each held-out item's outcome); ``None``
    without them."""
    frontier = tables.get("frontier")
    if frontier is None or frontier.empty:
        return None
    return draw_matched_frontier(frontier, tables["best_checkpoint"])


@styled
def draw_curve_frontier(table: pd.DataFrame) -> Figure:
    """The fifth amendment's frontier (``curve_frontier.csv``): per KL bin, KTO-S minus KTO read from the fitted
    curves at the bin centre, in the policy KL (the verdict) and the probe KL (beside it), with 95% t intervals over
    the bases and the ±margin shaded (left); the correct answer's log-probability read the same way (right). Each
    bin's tick names how many bases reach it in each KL."""
    fig = Figure(figsize=(DOUBLE, 2.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    bins = table[["kl_low", "kl_high"]].drop_duplicates().sort_values("kl_low")
    kinds = (("policy_kl", "policy KL (the verdict)", "o", PALETTE["KTO-S"]), ("probe_kl", "probe KL z0", "s", "0.45"))
    reach = {kl: table[table["kl"] == kl].set_index("kl_low")["n_bases"] for kl, *_ in kinds}
    names = [f"{lo:g}–{hi:g} nats\n{reach['policy_kl'].get(lo, 0)} | {reach['probe_kl'].get(lo, 0)} bases"
             for lo, hi in bins.itertuples(index=False)]  # fmt: skip
    for k, (kl, label, marker, colour) in enumerate(kinds):
        rows = table[table["kl"] == kl].sort_values("kl_low")
        x = np.arange(len(rows)) + (k - 0.5) * 0.2
        for ax, (mid, low, high) in ((left, ("diff", "low", "high")), (right, ("logprob_diff", "logprob_low",
                                                                                  "logprob_high"))):  # fmt: skip
            y, lo, hi = (rows[c].to_numpy(float) for c in (mid, low, high))
            ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt=marker, ms=3.5, capsize=2, lw=0.9, color=colour, label=label)
    margin = float(table["margin"].iat[0])
    left.axhspan(-margin, margin, color="0.88", lw=0, label=f"equivalence margin ±{margin:g}")
    for ax, xlabel in ((left, "KL bin, read at its centre (bases reaching it: policy | probe)"), (right, "KL bin")):
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(len(names)), names)
        ax.set_xlabel(xlabel)
    left.set(ylabel="accuracy, KTO-S − KTO", title="Task accuracy at matched KL (fitted curves)")
    right.set(ylabel="KTO-S − KTO (nats)", title="The correct answer's log-probability")
    left.legend(loc="lower left")
    return fig
