"""The policy KL in the figures: beside the probe KL of Figures 2 and 3, and against it over every run that has both.

The probe KL is KTO's reference point ``z0`` on fixed, mismatched, off-policy pairs (it can go negative); the policy
KL is KL(pi_theta || pi_ref) on the policy's own samples (:mod:`ktos.policy_kl`, never negative). Both are
sequence-level nats. A trajectory table written before the policy KL existed has no ``policy_kl`` column, or only
NaN in it: then nothing here draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ...runnames import METHOD_LABELS, METHODS
from .figure_style import PALETTE, SINGLE, styled


def measured(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` at which the policy KL was measured (none without the column)."""
    if "policy_kl" not in df:
        return df.iloc[:0]
    return df[np.isfinite(pd.to_numeric(df["policy_kl"], errors="coerce"))]


def kl_words(df: pd.DataFrame, probe_label: str, probe_title: str) -> tuple[str, str]:
    """The y label and title words of a KL figure: the probe's, or both KLs' where ``df`` has the policy KL."""
    if measured(df).empty:
        return probe_label, probe_title
    return "KL (nats, sequence-level)", probe_title.replace("probe KL", "probe KL (z0) and policy KL")


def policy_kl_line(ax: Axes, runs: pd.DataFrame, color: str) -> float | None:
    """The mean over ``runs``' seeds of the policy KL per step, as a line with markers on ``ax``; its highest value
    (``None`` when the runs did not measure it)."""
    mean = measured(runs).groupby("step")["policy_kl"].mean()
    if mean.empty:
        return None
    ax.plot(mean.index, mean.values, "-^", color=color, lw=1.1, ms=2.5, mec="white", mew=0.3, label="policy KL (mean)")
    return float(mean.max())


@styled
def draw_kl_relation(df: pd.DataFrame) -> Figure | None:
    """The probe KL (``z0``, the paper's quantity) against the policy KL at every step where a run measured both,
    over every run of the table, one colour per method, with the diagonal; ``None`` without the policy KL."""
    both = measured(df)
    both = both[np.isfinite(pd.to_numeric(both["probe_kl"], errors="coerce"))]
    if both.empty:
        return None
    both = both.assign(Method=both["method"].map(METHOD_LABELS))
    fig = Figure(figsize=(SINGLE, 3.0), layout="constrained")
    ax = fig.add_subplot()
    order = [METHOD_LABELS[m] for m in METHODS if m in set(both["method"])]
    sns.scatterplot(data=both, x="policy_kl", y="probe_kl", hue="Method", hue_order=order, palette=PALETTE, s=6,
                    alpha=0.4, lw=0, ax=ax)  # fmt: skip
    top = float(max(both["policy_kl"].max(), both["probe_kl"].max()))
    ax.plot([0, top], [0, top], ls="--", color="grey", lw=0.8, label="probe = policy")
    ax.axhline(0, color="black", lw=0.5)
    ax.set(xlabel="policy KL, KL(π_θ ‖ π_ref) on its own samples (nats)", ylabel="probe KL z0, mismatched pairs (nats)")
    runs = both.groupby(["regime", "base", "method", "lr", "seed"], dropna=False).ngroups
    ax.set_title(f"Probe KL against policy KL\n{len(both)} measurements over {runs} runs")
    ax.legend(fontsize=6)
    return fig
