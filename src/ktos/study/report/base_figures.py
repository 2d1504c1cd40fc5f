"""Figures of a study over several base models: Figures 2 and 3 with one panel per base, and the runs of every base
as one set of paired runs for the other figures of :mod:`ktos.study.report.figures`.

KL is the held-out probe KL (sequence-level nats); bands are Student-t 95% intervals over a base's seeds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ...runnames import METHOD_LABELS, lr_tag
from ..readings.analysis import Criteria, cell_summary, paired_table
from ..readings.rundir import KEYS
from ..readings.tables import Study
from .figure_style import DOUBLE, KL_LABEL, PALETTE, STEP_LABEL, seeds_and_mean, styled
from .policy_kl_figures import kl_words, measured, policy_kl_line

#: Panels per row of Figures 2 and 3 over bases, and the height (inches) each further row adds.
MAX_COLUMNS, ROW_HEIGHT = 6, 1.6


def _natural(name: str) -> tuple:
    """Sort key that orders ``..._seed2`` before ``..._seed11``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _headline_rows(df: pd.DataFrame, regime: str, lr: float) -> pd.DataFrame:
    """The headline cell's non-diverged rows with a probe KL, and a ``Method`` column as papers write it."""
    cell = df[(df["regime"] == regime) & np.isclose(df["lr"], lr) & (df["status"] != "diverged")]
    cell = cell[np.isfinite(cell["probe_kl"].astype(float))]
    return cell.assign(Method=cell["method"].map(METHOD_LABELS))


@styled
def draw_kl_figures_by_base(
    df: pd.DataFrame, *, regime: str, lr: float, criteria: Criteria, checkpoints: Sequence[int]
) -> tuple[Figure, Figure]:
    """Figures 2 (KTO) and 3 (KTO-S) of the headline cell over several bases: one panel per base (its seeds thin,
    its mean with a 95% t-band over its seeds; in Figure 3 KTO's mean on the same base), the pooled mean over bases
    (mean of base means) dashed in every panel, the threshold; all panels of both figures share the y-limits."""
    cell = _headline_rows(df, regime, lr)
    bases = sorted(cell["base"].dropna().unique(), key=_natural)
    policy = [float(measured(cell)["policy_kl"].max())] if len(measured(cell)) else []
    top = max([float(cell["probe_kl"].max()) if len(cell) else 0.0, criteria.threshold, *policy]) * 1.05
    bottom = min(float(cell["probe_kl"].min()) if len(cell) else 0.0, 0.0)
    steps = int(cell["max_steps"].max()) if len(cell) else 1
    beta = cell["beta"].iloc[0] if len(cell) else float("nan")
    ylabel, what = kl_words(cell, KL_LABEL, "held-out probe KL")
    figs = []
    for number, method in ((2, "KTO"), (3, "KTO-S")):
        mine = cell[cell["Method"] == method]
        pooled = mine.groupby(["base", "step"])["probe_kl"].mean().groupby("step").mean()
        columns = min(max(1, len(bases)), MAX_COLUMNS)
        rows = -(-max(1, len(bases)) // columns)
        extra = ROW_HEIGHT * (rows - 1)  # inches: each further row of panels
        fig = Figure(figsize=(DOUBLE, 2.6 + extra))
        grid = fig.subplots(rows, columns, sharey=True, squeeze=False)
        axes = list(grid.flat)
        for ax in axes[len(bases) :]:
            ax.set_visible(False)
        height = 2.6 + extra
        fig.subplots_adjust(left=0.08, right=0.99, bottom=0.3 * 2.6 / height, top=1 - 0.22 * 2.6 / height, wspace=0.08,
                            hspace=0.55 if rows > 1 else None)  # fmt: skip
        for ax, base in zip(axes, bases, strict=False):
            here = mine[mine["base"] == base]
            if here.empty:
                ax.text(0.5, 0.5, f"no {method} runs", transform=ax.transAxes, ha="center")
            else:
                seeds_and_mean(ax, here, PALETTE[method], "base mean ± 95% t-interval over its seeds")
            if method == "KTO-S":
                kto = cell[(cell["Method"] == "KTO") & (cell["base"] == base)].groupby("step")["probe_kl"].mean()
                ax.plot(
                    kto.index, kto.values, color="grey", alpha=0.6, lw=1.2, label="KTO's mean on this base (Fig. 2)"
                )
            policy_kl_line(ax, here, PALETTE[method])
            ax.plot(pooled.index, pooled.values, ls="--", color="black", lw=0.9, label="mean over bases")
            ax.axhline(criteria.threshold, ls=":", color="grey", lw=0.8, label=f"threshold {criteria.threshold:g}")
            accuracy = here["base_quality"].dropna()
            name = base.partition("_r")[0]  # the recipe's digest, the same on every panel, is in the title
            ax.set_title(name + (f"\nbase accuracy {accuracy.iat[0]:.3g}" if len(accuracy) else ""),
                         fontsize=7 if columns < MAX_COLUMNS else 6.5)  # fmt: skip
            last_row = axes.index(ax) + columns >= len(bases)
            ax.set(xlim=(0, steps * 1.02), ylim=(bottom, top), xlabel=STEP_LABEL if last_row else "", ylabel=ylabel)
            ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(3))
        handles, labels = axes[0].get_legend_handles_labels()
        for ax in axes:
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        fig.legend(handles, labels, loc="lower center", ncols=3, bbox_to_anchor=(0.5, 0.0))
        seeds = mine.groupby("base")["seed"].nunique()
        runs = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()} to {seeds.max()}"
        two_lines = what != "held-out probe KL"  # both KLs: the title on two lines, the panels lower
        if two_lines:
            fig.subplots_adjust(top=1 - 0.28 * 2.6 / height)
        recipes = sorted({b.partition("_r")[2] for b in bases} - {""})
        recipe = f" (recipe r{recipes[0]})" if len(recipes) == 1 else ""
        fig.suptitle(f"Figure {number}: {method}, {what} per step{chr(10) if two_lines else ' '}on each of "
                     f"{len(bases)} bases{recipe} ({runs} seeds each): {regime}, lr {lr_tag(lr)}, β {beta:g}",
                     fontsize=8.5)  # fmt: skip
        figs.append(fig)
    return figs[0], figs[1]


def flatten_bases(df: pd.DataFrame) -> pd.DataFrame:
    """A table over several bases as one set of paired runs: each (base, seed) gets its own ``seed`` number
    (``1000 * base index + seed``), so that the methods stay paired on it; one base is returned as it is."""
    bases = sorted(df["base"].dropna().unique())
    if len(bases) < 2:
        return df
    index = df["base"].map({b: i for i, b in enumerate(bases)})
    return df.assign(seed=df["seed"] + 1000 * index, base=None)


def paired_as_one_set(study: Study) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The runs, cells and paired differences of a study over several bases as one set of paired runs
    (:func:`flatten_bases`): the runs are the study's per-run table renumbered, not computed again; the cells
    and pairs pool every base's seeds."""
    runs = flatten_bases(study.tables["runs"])
    runs = runs[[*KEYS, *runs.columns.drop(list(KEYS))]].sort_values(list(KEYS), kind="stable").reset_index(drop=True)
    cells = cell_summary(flatten_bases(study.df), runs, study.criteria)
    return runs, cells, paired_table(runs, study.criteria)


def pooled_trend_cells(cells: pd.DataFrame, base_trends: pd.DataFrame) -> pd.DataFrame:
    """``cells`` (of the runs of every base as one set) with each cell's ``late_trend`` replaced by its verdict over
    bases (the study's ``base_trends``, :func:`ktos.study.readings.base_factor.pooled_trends`), so that a figure marks
    what the tables say."""
    trends = base_trends.set_index(["regime", "method", "lr"])["late_trend"]
    keys = pd.MultiIndex.from_frame(cells[["regime", "method", "lr"]])
    return cells.assign(late_trend=trends.reindex(keys).fillna(cells["late_trend"]).to_numpy())
