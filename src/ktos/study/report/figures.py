r"""Paper figures drawn with seaborn from the tidy trajectory table alone (no run dirs), as PNG and PDF.

Bands and error bars are explicit Student-t 95% intervals across seeds (:func:`t_band`), not seaborn's
bootstrap, which is too narrow for a handful of seeds. KL is the held-out probe KL (sequence-level nats)
unless a label says TRL's logged ``kl``. Diverged runs are left out of every mean and band.

* ``fig2_kto_kl`` / ``fig3_kto_s_kl`` (Figures 2 and 3): KTO's, then KTO-S's probe KL per optimizer step in
  the headline cell: each seed a thin line, the mean with its band, TRL's logged ``kl`` (mean) dashed beside
  it, the threshold, and markers at the plan note's steps. Shared y-limits; Figure 3 repeats KTO's mean. A study
  over several bases draws one panel per base instead (:func:`ktos.study.report.base_figures.draw_kl_figures_by_base`),
  so that a reader sees how much the base moves the trajectories; each panel repeats the pooled mean over bases.
* The other figures of a study over several bases pair the methods on each (base, seed): its runs are drawn as
  one set of paired runs (:func:`ktos.study.report.base_figures.flatten_bases`); the tables, not the figures, judge
  them over bases.
* ``paired``: per seed, final probe KL and task accuracy of KTO and KTO-S joined by a line (seeds pair them).
* ``companion``: rewards, loss and probe KL per token for both methods, and each method's gradient weight
  ``|d loss / d r|`` against ``r`` at several ``z0`` (:func:`ktos.losses.gradient_weight`).
* ``regime_search``: final probe KL of every KTO cell (schedule and length x beta x learning rate), the cells
  whose KL runs away marked; ``regime_trajectories``: the mean probe KL per step of the beta-0.2 cells.
* ``frontier``: final probe KL against task accuracy, KTO across its learning rates and KTO-S, means with
  intervals: KTO-S is compared with KTO at matched KL.
* ``paired_regimes``: the paired difference (KTO-S minus KTO) of final probe KL and accuracy with its
  interval in every regime that has both methods (the mechanism arms).
* ``scale`` and ``envelope`` (:mod:`ktos.study.report.scale_and_frontier_figures`): final probe KL against learning
  rate, update norm and parameter count across model sizes; accuracy against probe KL over every checkpoint,
  with each method's envelope.
* ``matched_frontier`` (with the runs' records): per KL bin, each method's accuracy on held-out items never used
  for choosing, and its difference from KTO against the equivalence margin (docs/study.md, fourth amendment).
* ``curve_frontier`` (with the runs' records and the policy KL): KTO-S minus KTO read from fitted curves at the KL
  bins' centres, in the policy KL and the probe KL, with the margin (docs/study.md, fifth amendment).

Output bytes are reproducible: no timestamps or software tags are written and ``svg.hashsalt`` is fixed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from ...loss_types import KTO, KTO_S
from ...losses import gradient_weight
from ...runnames import METHOD_LABELS, METHODS, lr_tag
from ..plan.outputs import FIGURES
from ..readings.analysis import Criteria
from ..readings.scale import scale_table
from ..readings.stats import step_stats
from ..readings.tables import load_study
from .base_figures import draw_kl_figures_by_base, flatten_bases, paired_as_one_set, pooled_trend_cells
from .figure_style import DOUBLE, KL_LABEL, PALETTE, SINGLE, STEP_LABEL, Z0_GRID, save, seeds_and_mean, styled, t_band
from .policy_kl_figures import draw_kl_relation, kl_words, measured, policy_kl_line
from .scale_and_frontier_figures import draw_curve_frontier, draw_scale, envelope_figure, matched_frontier_figure

log = logging.getLogger(__name__)


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    """Non-diverged rows with a ``Method`` column as papers write it."""
    ok = df[df["status"] != "diverged"]
    return ok.assign(Method=ok["method"].map(METHOD_LABELS))


def _cell(df: pd.DataFrame, regime: str, lr: float) -> pd.DataFrame:
    return df[(df["regime"] == regime) & np.isclose(df["lr"], lr)]


def _probe_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[np.isfinite(df["probe_kl"].astype(float))]


@styled
def draw_kl_figures(
    df: pd.DataFrame, *, regime: str, lr: float, criteria: Criteria, checkpoints: Sequence[int]
) -> tuple[Figure, Figure]:
    """Figures 2 (KTO) and 3 (KTO-S) of the headline cell, on shared y-limits and identical geometry."""
    cell = _labelled(_cell(df, regime, lr))
    probe = _probe_rows(cell)
    bands = [step_stats(probe[probe["method"] == m], "probe_kl") for m in METHODS if m in set(probe["method"])]
    highs = [float((b["mean"] + b["ci95"].fillna(0)).max()) for b in bands if len(b)]
    policy = [float(measured(cell)["policy_kl"].max())] if len(measured(cell)) else []
    top = max([float(probe["probe_kl"].max()) if len(probe) else 0.0, criteria.threshold, *highs, *policy]) * 1.05
    bottom = min(float(probe["probe_kl"].min()) if len(probe) else 0.0, 0.0)
    bottom -= 0.03 * (top - bottom) if bottom < 0 else 0.0  # room below the lowest seed
    beta = cell["beta"].iloc[0] if len(cell) else float("nan")
    steps = int(cell["max_steps"].max()) if len(cell) else 1
    figs = []
    # With the policy KL the title takes three lines and the legend a row more: a taller figure, the axes as large.
    extra = 0.45 if policy else 0.0
    height = 3.2 + extra
    rect = (0.17, 0.29, 0.79, 0.57) if not extra else (0.17, (0.928 + 0.27) / height, 0.79, 1.824 / height)
    for number, method in ((2, "KTO"), (3, "KTO-S")):
        fig = Figure(figsize=(SINGLE, height))
        ax = fig.add_axes(rect)
        mine = probe[probe["Method"] == method]
        if method == "KTO-S":
            kto = probe[probe["Method"] == "KTO"].groupby("step")["probe_kl"].mean()
            ax.plot(kto.index, kto.values, color="grey", alpha=0.45, lw=1.2, label="KTO mean (Fig. 2)")
        if mine.empty:
            ax.text(0.5, 0.5, f"no {method} runs in this cell", transform=ax.transAxes, ha="center")
        else:
            seeds_and_mean(ax, mine, PALETTE[method], "mean ± 95% t-interval")
        policy_kl_line(ax, cell[cell["Method"] == method], PALETTE[method])
        logged = cell[cell["Method"] == method].groupby("step")["kl"].mean()
        ax.plot(logged.index, logged.values, ls=":", lw=0.7, color=PALETTE[method], alpha=0.6,
                label="logged kl (mean)")  # fmt: skip
        at = mine[mine["step"].isin(checkpoints)].groupby("step")["probe_kl"].mean()
        ax.plot(at.index, at.values, "o", ms=3.5, color=PALETTE[method], mec="white", mew=0.5,
                label="steps " + ",".join(str(s) for s in checkpoints))  # fmt: skip
        ax.axhline(criteria.threshold, ls="--", color="black", lw=0.8, label=f"threshold {criteria.threshold:g}")
        if criteria.phase_end:
            ax.axvline(criteria.phase_end, ls=":", color="grey", lw=0.8, label="runaway phase end")
        ylabel, what = kl_words(cell, KL_LABEL, "held-out probe KL")
        ax.set(xlim=(0, steps * 1.02), ylim=(bottom, top), xlabel=STEP_LABEL, ylabel=ylabel)
        n = mine["seed"].nunique()
        head = f"Figure {number}: {method}, {what} per step".replace(" and policy KL", "\nand policy KL")  # fits
        ax.set_title(f"{head}\n{regime}, lr {lr_tag(lr)}, β {beta:g}, n = {n} seeds")
        handles, labels = ax.get_legend_handles_labels()
        if (legend := ax.get_legend()) is not None:
            legend.remove()
        fig.legend(handles, labels, loc="lower center", ncols=2, bbox_to_anchor=(0.55, 0.0), columnspacing=1.0)
        figs.append(fig)
    return figs[0], figs[1]


@styled
def draw_paired(runs: pd.DataFrame, *, regime: str, lr: float, pairs: pd.DataFrame) -> Figure | None:
    """Per seed, KTO and KTO-S joined: final probe KL and final task accuracy of the headline cell."""
    cell = _labelled(_cell(runs, regime, lr))
    if not {KTO, KTO_S} <= set(cell["method"]):
        return None
    cell = cell[cell["method"].isin([KTO, KTO_S])]
    fig = Figure(figsize=(DOUBLE * 0.62, 2.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric, ylabel in (
        (axes[0], "final_probe_kl", "final " + KL_LABEL),
        (axes[1], "quality", "final task accuracy"),
    ):
        wide = cell.pivot_table(index="seed", columns="Method", values=metric)
        for _, row in wide.iterrows():
            ax.plot([0, 1], [row["KTO"], row["KTO-S"]], color="grey", lw=0.6, alpha=0.6)
        sns.stripplot(data=cell, x="Method", y=metric, hue="Method", palette=PALETTE, order=["KTO", "KTO-S"],
                      jitter=False, size=4, ax=ax, legend=False)  # fmt: skip
        ax.set(xlabel="", ylabel=ylabel)
        hit = pairs[(pairs["regime"] == regime) & np.isclose(pairs["lr"], lr) & (pairs["metric"] == metric)]
        if len(hit):
            r = hit.iloc[0]
            ax.set_title(f"KTO-S − KTO: {r['diff']:+.3g}\n"
                         f"95% t-interval [{r['diff_low']:+.3g}, {r['diff_high']:+.3g}]\n"
                         f"lower in {r['n_lower']} of {r['n']} seeds", fontsize=7)  # fmt: skip
    fig.suptitle(f"Paired by seed: {regime}, lr {lr_tag(lr)}", fontsize=8.5)
    return fig


@styled
def draw_companion(df: pd.DataFrame, *, regime: str, lr: float) -> Figure:
    """Rewards, loss and probe KL per token for both methods (means ± t-intervals), and gradient weights."""
    cell = _labelled(_cell(df, regime, lr))
    beta = float(cell["beta"].iloc[0]) if len(cell) else 0.2
    fig = Figure(figsize=(DOUBLE, 4.8), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    panels = (
        ("rewards_chosen", "reward β·r, desirable", "(a) rewards/chosen"),
        ("rewards_rejected", "reward β·r, undesirable", "(b) rewards/rejected"),
        ("loss", "training loss", "(c) loss"),
        ("probe_kl_per_token", "probe KL (nats/token)", "(d) probe KL per completion token"),
    )
    for ax, (col, ylabel, title) in zip(axes, panels, strict=False):
        data = cell[np.isfinite(cell[col].astype(float))]
        sns.lineplot(data=data, x="step", y=col, hue="Method", palette=PALETTE, hue_order=["KTO", "KTO-S"],
                     errorbar=t_band, ax=ax, legend=ax is axes[0])  # fmt: skip
        ax.set(xlabel=STEP_LABEL, ylabel=ylabel, title=title)
    r = torch.linspace(-10, 10, 1000, dtype=torch.float64)  # even count: r = 0, where sign(r) = 0, is not sampled
    colors = sns.color_palette("viridis", len(Z0_GRID))
    for ax, desirable, title in (
        (axes[4], True, "(e) gradient weight, desirable"),
        (axes[5], False, "(f) gradient weight, undesirable"),
    ):
        for z0, color in zip(Z0_GRID, colors, strict=True):
            for sign_correction, ls in ((False, "-"), (True, "--")):
                w = gradient_weight(r, z0, beta=beta, desirable=desirable, sign_correction=sign_correction)
                label = (f"$z_0$ = {z0:g}" if not sign_correction else None) if desirable else None
                ax.plot(r.numpy(), w.numpy(), color=color, ls=ls, lw=1.1, label=label)
        ax.set(
            xlabel=r"$r=\log\,\pi_\theta(y|x)/\pi_{\rm ref}(y|x)$ (nats)",
            ylabel=r"$|\partial\,\mathrm{loss}/\partial r|$",
            title=title,
        )
        ax.set_ylim(0, 1.45 * beta / 4)
    axes[4].legend(loc="upper center", ncols=2, columnspacing=0.8)
    axes[5].plot([], [], color="grey", ls="-", label="KTO: peak at $r=z_0$")
    axes[5].plot([], [], color="grey", ls="--", label="KTO-S: shrinks with $z_0$")
    axes[5].legend(loc="upper center")
    fig.suptitle(f"KTO vs KTO-S, {regime}, lr {lr_tag(lr)}, β {beta:g}: mean ± 95% t-interval across seeds",
                 fontsize=8.5)  # fmt: skip
    return fig


def _schedule_steps(regime: str, max_steps: float) -> str:
    return f"{regime.split('_', 1)[0]}, {int(max_steps)} steps"


@styled
def draw_regime_search(cells: pd.DataFrame) -> Figure | None:
    """Heatmaps of KTO's final probe KL: one panel per schedule and length, beta x learning rate, runaway marked."""
    kto = cells[cells["method"] == KTO]
    if kto["regime"].nunique() < 2:
        return None
    kto = kto.assign(panel=[_schedule_steps(r, s) for r, s in zip(kto["regime"], kto["max_steps"], strict=True)])
    panels = sorted(kto["panel"].unique(), key=lambda p: (int(p.split(", ")[1].split()[0]), p))
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(DOUBLE, 1.9 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    vmax = float(np.nanmax(kto["final_probe_kl"]))
    norm = mpl.colors.SymLogNorm(linthresh=0.1, vmin=min(0.0, float(np.nanmin(kto["final_probe_kl"]))), vmax=vmax)
    for ax, panel in zip(axes, panels, strict=False):
        grid = kto[kto["panel"] == panel].pivot_table(index="beta", columns="lr", values="final_probe_kl")
        away = kto[kto["panel"] == panel].pivot_table(index="beta", columns="lr", values="runaway").astype(bool)
        annot = grid.map(lambda v: f"{v:.2g}") + away.reindex_like(grid).map(lambda a: "\n↑" if a else "")
        sns.heatmap(grid, annot=annot, fmt="", cmap="rocket_r", norm=norm, cbar=False, ax=ax,
                    annot_kws={"fontsize": 6}, linewidths=0.5, linecolor="white")  # fmt: skip
        ax.grid(False)
        ax.set_xticklabels([lr_tag(float(t.get_text())) for t in ax.get_xticklabels()])
        ax.set(title=panel, xlabel="learning rate", ylabel="β")
        ax.invert_yaxis()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap="rocket_r"), ax=axes[: len(panels)].tolist(),
                 label="final probe KL (nats)", shrink=0.8)  # fmt: skip
    fig.suptitle("KTO from the base model: final probe KL per cell (mean of seeds)\n↑: its KL runs away "
                 "(rises by > 0.1 nats over the last third of training, by no less than over the middle third)",
                 fontsize=8)  # fmt: skip
    return fig


@styled
def draw_regime_trajectories(df: pd.DataFrame, *, beta: float) -> Figure | None:
    """Mean probe KL per step of KTO's cells at one beta: one panel per schedule and length, hue = lr."""
    kto = _labelled(df[(df["method"] == KTO) & np.isclose(df["beta"], beta)])
    kto = _probe_rows(kto)
    if kto["regime"].nunique() < 2:
        return None
    kto = kto.assign(panel=[_schedule_steps(r, s) for r, s in zip(kto["regime"], kto["max_steps"], strict=True)],
                     lr_label=kto["lr"].map(lr_tag))  # fmt: skip
    order = sorted(kto["panel"].unique(), key=lambda p: (int(p.split(", ")[1].split()[0]), p))
    lrs = [lr_tag(x) for x in sorted(kto["lr"].unique())]
    grid = sns.relplot(data=kto, x="step", y="probe_kl", hue="lr_label", hue_order=lrs, col="panel",
                       col_order=order, col_wrap=3, kind="line", errorbar=t_band, palette="viridis",
                       height=1.9, aspect=1.2, err_kws={"alpha": 0.12},
                       facet_kws={"sharex": False, "sharey": True})  # fmt: skip
    means = kto.groupby(["panel", "lr", "step"])["probe_kl"].mean()
    grid.set(ylim=(min(0.0, float(means.min())) - 0.3, float(means.max()) * 1.1))  # the means; bands may leave it
    grid.set_titles("{col_name}")
    grid.set_axis_labels(STEP_LABEL, "probe KL (nats)")
    grid.legend.set_title("lr")
    grid.figure.subplots_adjust(top=0.88)
    seeds = int(kto.groupby(["regime", "lr"])["seed"].nunique().max())
    grid.figure.suptitle(f"KTO's probe KL per step at β {beta:g}: mean of seeds, shaded the 95% t-interval "
                         f"(wide with {seeds} seeds; cut at the axes)", fontsize=8)  # fmt: skip
    return grid.figure


@styled
def draw_frontier(runs: pd.DataFrame, cells: pd.DataFrame, *, regime: str) -> Figure | None:
    """Final probe KL against accuracy in one regime: KTO's learning rates (a line), KTO-S's and KTO-zero's
    (points), means with 95% t-intervals, seeds faint. None with fewer than three KTO learning rates."""
    c = cells[(cells["regime"] == regime)]
    if (c["method"] == KTO).sum() < 3 or KTO_S not in set(c["method"]):
        return None
    fig = Figure(figsize=(SINGLE * 1.25, 3.2), layout="constrained")
    ax = fig.add_subplot()
    seeds = _labelled(runs[runs["regime"] == regime])
    sns.scatterplot(data=seeds, x="final_probe_kl", y="quality", hue="Method", palette=PALETTE, alpha=0.25,
                    s=10, ax=ax, legend=False)  # fmt: skip
    for method, label in METHOD_LABELS.items():
        m = c[c["method"] == method].sort_values("lr")
        if m.empty:
            continue
        ax.errorbar(m["final_probe_kl"], m["quality"], xerr=m["final_probe_kl_ci95"], yerr=m["quality_ci95"],
                    fmt={KTO: "-o", KTO_S: "s"}.get(method, "D"), color=PALETTE[label], ms=4, lw=1.0, capsize=2,
                    label=f"{label} (mean ± 95% t-interval)")  # fmt: skip
        for row in m.itertuples(index=False):
            ax.annotate(lr_tag(row.lr), (row.final_probe_kl, row.quality), fontsize=5.5, xytext=(3, 3),
                        textcoords="offset points", color=PALETTE[label])  # fmt: skip
    base = c["base_quality"].iloc[0]
    if np.isfinite(base):
        ax.axhline(base, color="black", lw=0.7, ls=":", label=f"base model {base:.3g}")
    if (seeds["final_probe_kl"] > 0).all():
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=0.1)
    ax.set(xlabel="final " + KL_LABEL, ylabel="final task accuracy",
           title=f"KL-quality frontier, {regime}: labels are learning rates")  # fmt: skip
    ax.legend(loc="best")
    return fig


@styled
def draw_paired_regimes(pairs: pd.DataFrame) -> Figure | None:
    """Paired differences, KTO-S minus KTO, with 95% t-intervals, per regime x lr: final probe KL (as a
    fraction of KTO's) and task accuracy. None with fewer than two compared regimes."""
    if pairs.empty:
        return None
    sub = pairs[pairs["metric"].isin(["final_probe_kl", "quality"])]
    if sub["regime"].nunique() < 2:
        return None
    sub = sub.assign(cell=sub["regime"] + ", lr " + sub["lr"].map(lr_tag))
    fig = Figure(figsize=(DOUBLE * 0.8, 0.35 * sub["cell"].nunique() + 1.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, metric, x, lo, hi, label in (
        (
            axes[0],
            "final_probe_kl",
            "rel",
            "rel_low",
            "rel_high",
            "final probe KL, KTO-S − KTO\n(fraction of |KTO's mean|)",
        ),
        (axes[1], "quality", "diff", "diff_low", "diff_high", "final task accuracy,\nKTO-S − KTO"),
    ):
        m = sub[sub["metric"] == metric].reset_index(drop=True)
        ax.errorbar(m[x], m["cell"], xerr=[m[x] - m[lo], m[hi] - m[x]], fmt="o", color="#0072B2", ms=3.5, capsize=2)
        ax.axvline(0, color="black", lw=0.7)
        ax.set(xlabel=label, ylabel="")
    axes[0].invert_yaxis()
    fig.suptitle("Paired by seed, mean ± 95% t-interval", fontsize=8.5)
    return fig


def draw_all(
    table_csv: str | Path,
    out_dir: str | Path,
    *,
    regime: str | None = None,
    lr: float | None = None,
    checkpoints: Sequence[int] = (5, 10, 15, 20),
    run_info: str | Path | None = None,
    names: Sequence[str] | None = None,
    **criteria: Any,
) -> list[Path]:
    """Draw every figure the table supports into ``out_dir`` (``NAME.png`` + ``NAME.pdf``); return the paths.
    ``run_info``: the runs' records, for the matched-KL frontier drawn from each held-out item's outcome.

    ``regime`` and ``lr`` choose the headline cell (default: the first regime, its most-run lr); ``criteria``
    are :class:`~ktos.study.readings.analysis.Criteria`'s fields (threshold, window, margin, phase_end, beta,
    search_steps, arms). ``names`` (of :data:`ktos.study.plan.outputs.FIGURES`; the workflow's plan) draws exactly
    these figures: one the table cannot support is an error (the plan and the data disagree).
    """
    unknown = set(names or ()) - set(FIGURES)
    if unknown:
        raise ValueError(f"unknown figures {sorted(unknown)} (known: {', '.join(FIGURES)})")
    study = load_study(table_csv, regime=regime, lr=lr, checkpoints=checkpoints, run_info=run_info, **criteria)
    table, regime, lr, tables, beta = study.df, study.regime, study.lr, study.tables, study.criteria.beta
    several = study.several_bases
    draw_kl = draw_kl_figures_by_base if several else draw_kl_figures
    df = flatten_bases(table)
    kto_only = set(df["method"]) == {KTO}

    @functools.cache
    def kl_figures() -> tuple[Figure, Figure]:
        return draw_kl(table, regime=regime, lr=lr, criteria=study.criteria, checkpoints=study.checkpoints)

    @functools.cache
    def one_set() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """The runs, cells and pairs the figures draw: the tables', or over several bases all runs as one set."""
        return paired_as_one_set(study) if several else (tables["runs"], tables["cells"], tables["paired"])

    def scale() -> Figure | None:
        runs, cells, _ = one_set()
        return draw_scale(scale_table(pooled_trend_cells(cells, tables["base_trends"]), runs) if several
                          else tables["scale"])  # fmt: skip

    # Each figure is drawn when it is saved, from tables computed once (a figure not asked for costs nothing).
    figures: dict[str, Callable[[], Figure | None]] = {
        "fig2_kto_kl": lambda: kl_figures()[0],
        "fig3_kto_s_kl": lambda: kl_figures()[1] if KTO_S in set(df["method"]) else None,
        "paired": lambda: draw_paired(one_set()[0], regime=regime, lr=lr, pairs=one_set()[2]),
        "companion": lambda: draw_companion(df, regime=regime, lr=lr),
        # The regime search trains KTO alone across regimes; other studies' regimes are arms, not a search.
        "regime_search": lambda: draw_regime_search(one_set()[1]) if kto_only else None,
        "regime_trajectories": lambda: draw_regime_trajectories(df, beta=beta) if kto_only else None,
        "frontier": lambda: draw_frontier(one_set()[0], one_set()[1], regime=regime),
        "paired_regimes": lambda: draw_paired_regimes(one_set()[2]),
        "scale": scale,
        # over several bases an envelope of (base, seed) means mixes starting points; the tables give one per base
        "envelope": lambda: None if several else envelope_figure(df, regime),
        "matched_frontier": lambda: matched_frontier_figure(tables),
        "curve_frontier": lambda: draw_curve_frontier(tables["curve_frontier"]) if "curve_frontier" in tables else None,
        "kl_relation": lambda: draw_kl_relation(table),
    }
    paths: list[Path] = []
    for name in FIGURES if names is None else names:
        fig = figures[name]()
        if fig is None and names is None:
            log.info("skipping %s: the table lacks what it shows", name)
            continue
        if fig is None:
            raise ValueError(f"figure {name} was asked for, but the trajectory table lacks what it shows")
        paths.extend(save(fig, out_dir, name))
    log.info("wrote %d figures (%d files) to %s", len(paths) // 2, len(paths), out_dir)
    return paths
