"""The look shared by every figure: paper-sized fonts, the Okabe-Ito palette, reproducible PNG and PDF output.

Bands and error bars are explicit Student-t 95% intervals across seeds (:func:`t_band`), not seaborn's
bootstrap, which is too narrow for a handful of seeds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ...loss_types import LOSSES
from ..readings.stats import t_interval

logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting logs every glyph table

#: Matplotlib settings for every figure: paper-sized fonts, TrueType in PDF, reproducible output.
STYLE: dict[Any, Any] = {
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
PALETTE: dict[str, str] = {loss.label: loss.colour for loss in LOSSES}  # Okabe-Ito, from ktos.loss_types
KL_LABEL = "probe KL (nats, sequence-level)"
STEP_LABEL = "optimizer step"
Z0_GRID: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
DOUBLE, SINGLE = 7.0, 3.4  # figure widths, inches

P = ParamSpec("P")
R = TypeVar("R")


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` under :data:`STYLE` (rcParams are read when artists are made and when files are saved)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with mpl.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def t_band(values: pd.Series) -> tuple[float, float]:
    """seaborn ``errorbar``: the 95% Student-t interval of the mean across seeds."""
    low, high = t_interval(np.asarray(values, dtype=float))
    mean = float(np.mean(values))
    return (low, high) if np.isfinite(low) else (mean, mean)


def save(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``name.png`` (150 dpi) and ``name.pdf`` without timestamps or software tags."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    with mpl.rc_context(STYLE):
        fig.savefig(png, dpi=150, metadata={"Software": None})
        fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None})
    return [png, pdf]


def seeds_and_mean(ax: Axes, runs: pd.DataFrame, color: str, label: str) -> None:
    """Each seed's probe KL per step as a thin line, and their mean with its 95% t-band (:func:`t_band`)."""
    sns.lineplot(data=runs, x="step", y="probe_kl", units="seed", estimator=None, color=color, lw=0.5, alpha=0.35,
                 ax=ax, legend=False)  # fmt: skip
    sns.lineplot(data=runs, x="step", y="probe_kl", errorbar=t_band, color=color, ax=ax, label=label)
