r"""Paper figures drawn from the tidy trajectory table alone (no run dirs), as PNG (150 dpi) and PDF.

* ``fig2_kto_kl`` / ``fig3_kto_s_kl`` (Figures 2 and 3): TRL's logged ``kl`` (the reference point
  ``z0``, sequence-level nats) per optimizer step for KTO, then KTO-S, at one learning rate: each seed a
  thin line, the mean across seeds with its 95% CI band (Student t), markers at the checkpoint steps,
  the stability threshold dashed. Both share their y-limits; Figure 3 repeats KTO's mean in grey.
* ``companion``: logged rewards (chosen, rejected, margins; batch means of ``beta * r``) and loss per
  step for both methods, and the gradient weight ``|d loss / d r| = beta * sigmoid'(x)`` of
  :func:`ktos.losses.gradient_weight` against ``r`` for several ``z0``, desirable and undesirable.
* ``probe_kl``: logged ``kl`` against the held-out probe's ``probe_kl`` (sequence-level nats) and
  ``probe_kl_per_token`` (nats/token). Skipped when the table has no probe values.
* ``frontier``: final KL against final quality, one point per method x lr x seed.
* ``stability_map``: max KL over the first N steps against learning rate, seeds and mean per method.

Diverged runs are drawn as thin lines up to their divergence step with an ``x`` there, and are left out
of every mean and band. Output bytes are reproducible: no timestamps or software tags are written and
``svg.hashsalt`` is fixed, so redrawing from the same table gives identical files.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from .losses import gradient_weight
from .rundir import read_table
from .runnames import METHODS, lr_tag, method_label
from .stats import step_stats
from .tables import DEFAULT_CHECKPOINTS, default_lr, per_run, table_beta

log = logging.getLogger(__name__)
# PDF font subsetting logs every glyph table at INFO: keep the CLI's log readable.
logging.getLogger("fontTools").setLevel(logging.WARNING)

#: Matplotlib settings for every figure: paper-sized fonts, TrueType in PDF, reproducible output.
STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.3,
    "legend.frameon": False,
    "pdf.fonttype": 42,
    "svg.hashsalt": "ktos",
    "savefig.dpi": 150,
}
COLORS: dict[str, str] = {"kto": "#D55E00", "kto_s": "#0072B2"}  # Okabe-Ito vermillion / blue
DIVERGED_COLOR = "#000000"
KL_LABEL = "KL (nats, sequence-level)"
STEP_LABEL = "optimizer step"
DEFAULT_BETA = 0.2
#: Reference points for the gradient-weight panels (sequence-level nats).
Z0_GRID: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
LR_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
DOUBLE = 7.0  # two columns, inches

P = ParamSpec("P")
R = TypeVar("R")


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` under :data:`STYLE` (rcParams are read when artists are made and when files are saved)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with mpl.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``name.png`` (150 dpi) and ``name.pdf`` without timestamps or software tags."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    with mpl.rc_context(STYLE):
        fig.savefig(png, dpi=150, metadata={"Software": None})
        fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None})
    return [png, pdf]


def _at_lr(df: pd.DataFrame, lr: float) -> pd.DataFrame:
    return df[np.isclose(df["lr"], lr, rtol=1e-9, atol=0)]


def _runs(df: pd.DataFrame) -> list[pd.DataFrame]:
    """One frame per (method, lr, seed) run, sorted by step."""
    return [g.sort_values("step") for _, g in df.groupby(["method", "lr", "seed"], sort=True, dropna=False)]


def _finite(run: pd.DataFrame, col: str) -> pd.DataFrame:
    return run[np.isfinite(run[col].astype(float))]


def _n_runs(df: pd.DataFrame) -> int:
    return len(df.drop_duplicates(["method", "lr", "seed"]))


def _subtitle(lr: float, beta: float | None, n: int | str, n_diverged: int = 0) -> str:
    seeds = f"n = {n} seed" + ("" if n == 1 else "s") + (f" ({n_diverged} diverged)" if n_diverged else "")
    return f"lr {lr_tag(lr)}" + (f", β {beta:g}" if beta is not None else "") + f", {seeds}"


def _n_diverged(df: pd.DataFrame) -> int:
    return _n_runs(df[df["status"] == "diverged"])


def _integer_steps(ax: Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _mean_band(
    ax: Axes, df: pd.DataFrame, col: str, color: str, label: str | None, **kw: Any
) -> pd.DataFrame:
    """Mean of ``col`` across non-diverged seeds per step, with a 95% CI band where n >= 2."""
    st = step_stats(df, col)
    if st.empty:
        return st
    ax.plot(st["step"], st["mean"], color=color, label=label, zorder=3, **kw)
    band = st[st["n"] >= 2]
    ax.fill_between(
        band["step"],
        band["mean"] - band["ci95"],
        band["mean"] + band["ci95"],
        color=color,
        alpha=0.2,
        lw=0,
        zorder=2,
    )
    return st


def _kl_limits(df: pd.DataFrame, threshold: float) -> tuple[float, float]:
    """y-limits covering every method's seeds (diverged runs up to the step before divergence), 95% bands
    and the threshold: the shared limits of Figures 2 and 3."""
    vals = [threshold]
    for run in _runs(df):
        fin = _finite(run, "kl")
        if (run["status"] == "diverged").any():
            fin = fin[fin["step"] < run["step"].max()]  # the divergence step's value is no data
        vals.extend(fin["kl"].tolist())
    for m in METHODS:
        st = step_stats(df[df["method"] == m], "kl")
        vals.extend((st["mean"] + st["ci95"].fillna(0)).tolist())
    lo, hi = min(0.0, min(vals)), max(vals)
    return lo, hi + 0.06 * (hi - lo)


def _draw_seeds(ax: Axes, df: pd.DataFrame, col: str, color: str, *, lines: bool = True) -> bool:
    """A thin line per seed over its finite values (if ``lines``); a diverged run gets an ``x`` at its
    divergence step (its last row) at its value there, or at the top of the axes when that value is
    non-finite or off the top (set the y-limits first). True if any run diverged."""
    lo, hi = ax.get_ylim()
    any_div = False
    for run in _runs(df):
        fin = _finite(run, col)
        if lines:
            ax.plot(fin["step"], fin[col], color=color, lw=0.6, alpha=0.45, zorder=1)
        if (run["status"] == "diverged").any():
            value = float(run[col].iat[-1])
            top = hi - 0.03 * (hi - lo)
            y = min(max(value, lo), top) if np.isfinite(value) else top
            ax.plot(run["step"].iat[-1], y, "x", color=DIVERGED_COLOR, ms=6, mew=1.3, zorder=5)
            any_div = True
    return any_div


def _checkpoint_markers(ax: Axes, st: pd.DataFrame, checkpoints: Sequence[int], color: str) -> None:
    at = st[st["step"].isin(checkpoints)]
    if len(at):
        ax.plot(
            at["step"],
            at["mean"],
            "o",
            color=color,
            ms=4,
            mec="white",
            mew=0.6,
            zorder=4,
            label="mean at steps " + ", ".join(str(int(s)) for s in at["step"]),
        )


@styled
def draw_kl_figures(
    df: pd.DataFrame,
    *,
    threshold: float,
    checkpoints: Sequence[int] = DEFAULT_CHECKPOINTS,
    lr: float | None = None,
    beta: float | None = None,
) -> tuple[Figure, Figure]:
    """Figures 2 (KTO) and 3 (KTO-S): per-step ``kl`` at one lr, on shared y-limits and identical axes
    geometry (fixed layout, legend below the axes).

    Each seed a thin line, mean across non-diverged seeds with its 95% CI band (Student t across seeds
    at each step), dots on the mean at ``checkpoints``, the threshold dashed. Figure 3 repeats KTO's
    mean in grey (alpha 0.4). ``lr`` defaults to :func:`ktos.tables.default_lr`.
    """
    lr = default_lr(df, lr)
    sub = _at_lr(df, lr)
    beta = beta if beta is not None else table_beta(sub)
    ylim = _kl_limits(sub, threshold)
    steps = sub["step"].dropna()
    xlim = (min(0.0, float(steps.min())), float(steps.max()) * 1.03) if len(steps) else (0.0, 1.0)
    figs = []
    for fig_no, method in ((2, "kto"), (3, "kto_s")):
        m = sub[sub["method"] == method]
        fig = Figure(figsize=(3.4, 3.2))
        ax = fig.add_axes((0.17, 0.29, 0.79, 0.59))
        ax.set(xlim=xlim, ylim=ylim)
        if method == "kto_s":
            ref = step_stats(sub[sub["method"] == "kto"], "kl")
            ax.plot(ref["step"], ref["mean"], color="grey", alpha=0.4, lw=1.3, label="KTO mean (Figure 2)")
        diverged = _draw_seeds(ax, m, "kl", COLORS[method])
        if len(m):
            ax.plot([], [], color=COLORS[method], lw=0.6, alpha=0.45, label="single seeds")
        st = _mean_band(ax, m, "kl", COLORS[method], f"{method_label(method)} mean ± 95% CI")
        _checkpoint_markers(ax, st, checkpoints, COLORS[method])
        ax.axhline(threshold, ls="--", color="black", lw=0.8, label=f"threshold {threshold:g}", zorder=2.5)
        if diverged:
            ax.plot([], [], "x", color=DIVERGED_COLOR, label="diverged (not in mean)")
        if not len(m):
            ax.text(
                0.5,
                0.5,
                f"no {method_label(method)} runs at lr {lr_tag(lr)}",
                transform=ax.transAxes,
                ha="center",
                va="center",
            )
        _integer_steps(ax)
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel(KL_LABEL)
        ax.set_title(
            f"Figure {fig_no}: {method_label(method)}, logged KL per step\n"
            + _subtitle(lr, beta, _n_runs(m), _n_diverged(m))
        )
        fig.legend(
            *ax.get_legend_handles_labels(),
            loc="lower center",
            ncols=2,
            bbox_to_anchor=(0.55, 0.0),
            columnspacing=1.0,
            handlelength=1.8,
        )
        figs.append(fig)
    return figs[0], figs[1]


@styled
def draw_companion(df: pd.DataFrame, *, lr: float | None = None, beta: float | None = None) -> Figure:
    """Rewards (chosen, rejected, margins) and loss per step for both methods (means ± 95% CI across
    seeds; diverged runs only as an ``x`` at their last step), and the gradient weight of each method
    against ``r`` at several ``z0`` (desirable and undesirable examples; ``beta`` from the table, else 0.2).
    """
    lr = default_lr(df, lr)
    sub = _at_lr(df, lr)
    beta_t = table_beta(sub)
    beta = beta if beta is not None else (beta_t if beta_t is not None else DEFAULT_BETA)
    fig = Figure(figsize=(DOUBLE, 4.8), layout="constrained")
    axes = fig.subplots(2, 3)
    flat = axes.ravel()
    panels = (
        ("rewards_chosen", "reward β·r, desirable", "(a) rewards/chosen"),
        ("rewards_rejected", "reward β·r, undesirable", "(b) rewards/rejected"),
        ("rewards_margins", "chosen − rejected (β·r)", "(c) rewards/margins"),
        ("loss", "loss", "(d) training loss"),
    )
    any_div = False
    for ax, (col, ylabel, title) in zip(flat, panels, strict=False):
        for m in METHODS:
            _mean_band(ax, sub[sub["method"] == m], col, COLORS[m], method_label(m))
        for m in METHODS:
            diverged = sub[(sub["method"] == m) & (sub["status"] == "diverged")]
            any_div |= _draw_seeds(ax, diverged, col, COLORS[m], lines=False)
        ax.set(xlabel=STEP_LABEL, ylabel=ylabel, title=title)
        _integer_steps(ax)
    if any_div:
        flat[0].plot([], [], "x", color=DIVERGED_COLOR, label="diverged run (not in mean)")
    flat[0].legend(loc="best")

    # An even count of points: r = 0 exactly, where sign(r) = 0 gives KTO-S an isolated spike, is not sampled.
    r = torch.linspace(-10, 10, 1000, dtype=torch.float64)
    cmap = mpl.colormaps["viridis"]
    colors = [cmap(0.85 * i / max(len(Z0_GRID) - 1, 1)) for i in range(len(Z0_GRID))]
    for ax, desirable, title in (
        (flat[4], True, "(e) gradient weight, desirable"),
        (flat[5], False, "(f) gradient weight, undesirable"),
    ):
        for z0, color in zip(Z0_GRID, colors, strict=True):
            for sign_correction, ls in ((False, "-"), (True, "--")):
                w = gradient_weight(r, z0, beta=beta, desirable=desirable, sign_correction=sign_correction)
                ax.plot(r.numpy(), w.numpy(), color=color, ls=ls, lw=1.1)
        ax.set(
            xlabel=r"$r=\log\,\pi_\theta(y|x)/\pi_{\rm ref}(y|x)$ (nats)",
            ylabel=r"$|\partial\,\mathrm{loss}/\partial r|$ (per nat)",
            title=title,
        )
        ax.set_ylim(0, 1.45 * beta / 4)  # headroom above the peak (beta/4) for the legend
    z0_handles = [
        Line2D([], [], color=c, label=f"$z_0$ = {z0:g} nats") for z0, c in zip(Z0_GRID, colors, strict=True)
    ]
    style_handles = [
        Line2D([], [], color="grey", ls="-", label="KTO: peak at $r=z_0$"),
        Line2D([], [], color="grey", ls="--", label="KTO-S: shrinks with $z_0$"),
    ]
    flat[4].legend(handles=z0_handles, loc="upper center", ncols=2, columnspacing=0.8)
    flat[5].legend(handles=style_handles, loc="upper center")
    n = "/".join(str(_n_runs(sub[sub["method"] == m])) for m in METHODS)
    div = f", {_n_diverged(sub)} diverged, not in means" if _n_diverged(sub) else ""
    fig.suptitle(
        f"Rewards, loss and gradient weights, KTO vs KTO-S (lr {lr_tag(lr)}, β {beta:g}, "
        f"n = {n} seeds KTO/KTO-S{div}; mean ± 95% CI)",
        fontsize=8.5,
    )
    return fig


def _has_probe(df: pd.DataFrame) -> bool:
    return bool(np.isfinite(df["probe_kl"].astype(float)).any())


@styled
def draw_probe(df: pd.DataFrame, *, lr: float | None = None, beta: float | None = None) -> Figure | None:
    """Logged ``kl`` (lines) against the held-out ``probe_kl`` (dots, dashed) per step for both methods,
    and ``probe_kl_per_token``; means ± 95% CI across seeds. None when the lr has no probe values."""
    lr = default_lr(df, lr)
    sub = _at_lr(df, lr)
    if not _has_probe(sub):
        return None
    beta = beta if beta is not None else table_beta(sub)
    fig = Figure(figsize=(DOUBLE, 2.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for m in METHODS:
        msub = sub[sub["method"] == m]
        _mean_band(ax1, msub, "kl", COLORS[m], f"{method_label(m)} logged kl")
        _mean_band(ax1, msub, "probe_kl", COLORS[m], f"{method_label(m)} probe_kl", ls="--", marker="o", ms=3)
        _mean_band(ax2, msub, "probe_kl_per_token", COLORS[m], method_label(m), ls="--", marker="o", ms=3)
    ax1.set(
        xlabel=STEP_LABEL, ylabel=KL_LABEL, title="(a) logged kl (training batches) vs probe_kl (held out)"
    )
    ax2.set(xlabel=STEP_LABEL, ylabel="probe KL (nats/token)", title="(b) probe_kl per completion token")
    _integer_steps(ax1)
    _integer_steps(ax2)
    ax1.legend(loc="upper left")
    ax2.legend(loc="upper left")
    n = "/".join(str(_n_runs(sub[sub["method"] == m])) for m in METHODS)
    div = f", {_n_diverged(sub)} diverged, not in means" if _n_diverged(sub) else ""
    fig.suptitle(f"KL estimates ({_subtitle(lr, beta, n)} KTO/KTO-S{div}; mean ± 95% CI)", fontsize=8.5)
    return fig


def _log_if_wide(values: pd.Series, ratio: float = 20.0) -> bool:
    """Log scale when every value is positive and they span more than ``ratio``."""
    v = values[np.isfinite(values)]
    return bool(len(v) and (v > 0).all() and v.max() / v.min() > ratio)


@styled
def draw_frontier(df: pd.DataFrame) -> Figure | None:
    """Final KL (x) against final quality (y): one point per method x lr x seed, colour = method,
    marker = lr. x is the last ``probe_kl`` when every plotted run has one, else the mean logged ``kl`` of
    the last 3 steps. Diverged runs are not plotted (counted in the title). None without quality."""
    runs = per_run(df)
    div = int(runs["diverged"].sum())
    ok = runs[~runs["diverged"] & np.isfinite(runs["quality"].astype(float))]
    if ok.empty:
        return None
    use_probe = bool(np.isfinite(ok["final_probe_kl"].astype(float)).all())
    xcol = "final_probe_kl" if use_probe else "final_kl"
    xlabel = (
        "final probe KL" if use_probe else "final logged KL (mean of last 3 steps)"
    ) + " (nats, sequence-level)"
    lrs = sorted(ok["lr"].unique())
    markers = {lr: LR_MARKERS[i % len(LR_MARKERS)] for i, lr in enumerate(lrs)}
    fig = Figure(figsize=(3.4, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for r in ok.itertuples(index=False):
        ax.plot(
            getattr(r, xcol),
            r.quality,
            markers[r.lr],
            color=COLORS.get(r.method, "grey"),
            ms=5,
            alpha=0.85,
            mec="white",
            mew=0.4,
            ls="none",
        )
    if _log_if_wide(ok[xcol]):
        ax.set_xscale("log")
    metric = (
        str(ok["quality_metric"].dropna().iat[0]).replace("_", " ")
        if ok["quality_metric"].notna().any()
        else "quality"
    )
    ax.set(xlabel=xlabel, ylabel=f"final {metric}")
    handles = [
        Line2D([], [], marker="o", ls="none", color=COLORS[m], label=method_label(m))
        for m in METHODS
        if m in set(ok["method"])
    ]
    if len(lrs) > 1:
        handles += [
            Line2D([], [], marker=markers[lr], ls="none", color="grey", label=f"lr {lr_tag(lr)}")
            for lr in lrs
        ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), columnspacing=1.0)
    note = f"; {div} diverged, not shown" if div else ""
    ax.set_title(f"KL–quality frontier, one point per run\n({len(ok)} runs{note})")
    return fig


@styled
def draw_stability_map(df: pd.DataFrame, *, threshold: float, first_n_steps: int) -> Figure | None:
    """Max ``kl`` over the first ``first_n_steps`` steps against learning rate (log x): each seed a
    point, the mean across non-diverged seeds a line, diverged runs an ``x`` at the top. None with one lr."""
    runs = per_run(df, first_n_steps=first_n_steps)
    lrs = sorted(runs["lr"].dropna().unique())
    if len(lrs) < 2:
        return None
    fig = Figure(figsize=(3.4, 3.0), layout="constrained")
    ax = fig.add_subplot()
    ok = runs[~runs["diverged"]]
    finite = ok["max_kl"][np.isfinite(ok["max_kl"].astype(float))]
    logy = _log_if_wide(pd.concat([finite, pd.Series([threshold])]), ratio=30)
    top = max([threshold, *finite.tolist()])
    top = top * 2.0 if logy else top * 1.1
    offsets = {"kto": 0.94, "kto_s": 1.06}  # side by side in log-lr, so the seeds do not overlap
    any_div = False
    for m in METHODS:
        mr = runs[runs["method"] == m]
        if mr.empty:
            continue
        good = mr[~mr["diverged"]]
        ax.plot(good["lr"] * offsets[m], good["max_kl"], "o", color=COLORS[m], ms=3.5, alpha=0.6, mew=0)
        means = good.groupby("lr")["max_kl"].mean()
        ax.plot(means.index, means.values, "-", color=COLORS[m], lw=1.4, label=f"{method_label(m)} mean")
        bad = mr[mr["diverged"]]
        if len(bad):
            ax.plot(
                bad["lr"] * offsets[m], [top] * len(bad), "x", color=COLORS[m], ms=6, mew=1.3, clip_on=False
            )
            any_div = True
    ax.axhline(threshold, ls="--", color="black", lw=0.8, label=f"threshold {threshold:g}")
    ax.plot([], [], "o", color="grey", ms=3.5, alpha=0.6, mew=0, label="single seeds")
    if any_div:
        ax.plot([], [], "x", color="grey", label="diverged (at top)")
    ax.set_xscale("log")
    ax.set_xticks(lrs, [lr_tag(lr) for lr in lrs])  # the swept rates only: no crowded minor labels
    ax.xaxis.set_minor_formatter(NullFormatter())
    if logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(min(0.0, float(finite.min()) if len(finite) else 0.0), top * 1.02)
    ax.set(
        xlabel="learning rate",
        ylabel=f"max KL, steps ≤ {first_n_steps}\n(nats, sequence-level)",
        title=f"Stability map: max logged KL, first {first_n_steps} steps",
    )
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, columnspacing=1.0)
    return fig


def draw_all(
    table_csv: str | Path,
    out_dir: str | Path,
    *,
    threshold: float,
    checkpoints: Sequence[int] = DEFAULT_CHECKPOINTS,
    first_n_steps: int | None = None,
    beta: float | None = None,
    lr: float | None = None,
) -> list[Path]:
    """Draw every figure from the tidy table into ``out_dir`` (``NAME.png`` + ``NAME.pdf``); return the paths.

    Figures needing data the table lacks (probe values, quality, several lrs) are skipped with a log
    message. ``first_n_steps`` (stability map) defaults to ``max(checkpoints)``; ``lr`` (Figures 2, 3,
    companion, probe) defaults to :func:`ktos.tables.default_lr`; ``beta`` to the table's.
    """
    df = read_table(table_csv)
    n_steps = first_n_steps if first_n_steps is not None else max(checkpoints)
    fig2, fig3 = draw_kl_figures(df, threshold=threshold, checkpoints=checkpoints, lr=lr, beta=beta)
    figures: dict[str, Figure | None] = {
        "fig2_kto_kl": fig2,
        "fig3_kto_s_kl": fig3,
        "companion": draw_companion(df, lr=lr, beta=beta),
        "probe_kl": draw_probe(df, lr=lr, beta=beta),
        "frontier": draw_frontier(df),
        "stability_map": draw_stability_map(df, threshold=threshold, first_n_steps=n_steps),
    }
    why = {
        "probe_kl": "no probe_kl values",
        "frontier": "no quality values",
        "stability_map": "only one learning rate",
    }
    paths: list[Path] = []
    for name, fig in figures.items():
        if fig is None:
            log.info("skipping %s: %s in %s", name, why[name], table_csv)
            continue
        paths.extend(save(fig, out_dir, name))
    log.info("wrote %d figures (%d files) to %s", len(paths) // 2, len(paths), out_dir)
    return paths
