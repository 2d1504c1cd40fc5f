r"""Tables from the tidy trajectory table: per-run summaries, KL at checkpoint steps, stability map, frontier.

Units as in :mod:`ktos.rundir`; statistics across seeds as in :mod:`ktos.stats`. Diverged runs are never
averaged as data: their rows up to the divergence step stay in per-run rows, they count as failing the
stability criterion, and every mean, spread and extreme across seeds is over the runs that did not diverge.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .rundir import KEYS
from .runnames import lr_tag, method_label
from .stats import mean_spread

log = logging.getLogger(__name__)

#: The plan note's checkpoint steps, where the notes reported KL.
DEFAULT_CHECKPOINTS: tuple[int, ...] = (5, 10, 15, 20)


def default_lr(df: pd.DataFrame, lr: float | None = None) -> float:
    """The learning rate figures and the verdict use: ``lr`` if given (must be in the table), else
    the lr with the most runs (both methods counted), ties broken by the (lower) median of the tied lrs."""
    lrs = df["lr"].dropna().unique()
    if len(lrs) == 0:
        raise ValueError("the table holds no learning rate")
    if lr is not None:
        if not np.isclose(lrs, lr, rtol=1e-9, atol=0).any():
            raise ValueError(f"lr {lr:g} not in the table (has {sorted(lrs.tolist())})")
        return float(lrs[np.isclose(lrs, lr, rtol=1e-9, atol=0)][0])
    counts = df.drop_duplicates(list(KEYS)).groupby("lr").size()
    tied = sorted(counts.index[counts == counts.max()].tolist())
    return float(tied[(len(tied) - 1) // 2])


def table_beta(df: pd.DataFrame) -> float | None:
    """The table's single beta, or None when absent or not unique."""
    betas = df["beta"].dropna().unique()
    return float(betas[0]) if len(betas) == 1 else None


def per_run(
    df: pd.DataFrame, *, first_n_steps: int | None = None, checkpoints: Sequence[int] = ()
) -> pd.DataFrame:
    """One row per (method, lr, seed) run.

    Columns: method, lr, beta, seed, status, diverged (bool), last_step (last logged step), max_kl (max
    finite ``kl`` over steps ``<= first_n_steps``, all steps if None), window_end (last step that max
    covers), final_kl (mean ``kl`` of the last 3 logged steps), final_probe_kl and
    final_probe_kl_per_token (last logged probe values), probe_step (its step), quality_metric, quality,
    and ``kl_step{s}`` (``kl`` at step ``s``, NaN if not logged) for each of ``checkpoints``.
    """
    rows = []
    for key, run in df.groupby(list(KEYS), sort=True, dropna=False):
        run = run.sort_values("step")
        kl = run.dropna(subset=["kl"])
        kl = kl[np.isfinite(kl["kl"])]
        window = kl if first_n_steps is None else kl[kl["step"] <= first_n_steps]
        probe = run.dropna(subset=["probe_kl"])
        status = str(run["status"].iat[0])
        kl_at = dict(zip(kl["step"], kl["kl"], strict=True))
        rows.append(
            {
                **dict(zip(KEYS, key, strict=True)),
                "beta": run["beta"].iat[0],
                "status": status,
                "diverged": status == "diverged",
                "last_step": run["step"].max(),
                "max_kl": window["kl"].max() if len(window) else math.nan,
                "window_end": window["step"].max() if len(window) else math.nan,
                "final_kl": kl["kl"].tail(3).mean() if len(kl) else math.nan,
                "final_probe_kl": probe["probe_kl"].iat[-1] if len(probe) else math.nan,
                "final_probe_kl_per_token": probe["probe_kl_per_token"].iat[-1] if len(probe) else math.nan,
                "probe_step": probe["step"].iat[-1] if len(probe) else math.nan,
                "quality_metric": run["quality_metric"].iat[0],
                "quality": run["quality"].iat[0],
                **{f"kl_step{s}": kl_at.get(s, math.nan) for s in checkpoints},
            }
        )
    return pd.DataFrame(rows)


def checkpoint_table(df: pd.DataFrame, steps: Sequence[int], threshold: float) -> pd.DataFrame:
    """KL at checkpoint steps per run, then summary rows per method x lr.

    ``row`` is ``"run"`` for one (method, lr, seed), then ``"mean"``, ``"std"``, ``"ci95"`` (95% CI
    half-width) and ``"n"`` (runs contributing to each cell) across that method x lr's non-diverged runs.
    Columns ``kl_step{s}`` hold ``kl`` at step ``s`` (NaN if not reached), ``max_kl`` the max over steps
    ``<= max(steps)`` (all steps a shorter run logged), ``window_end`` the last step it covers, ``quality``
    the run's final quality. ``stability``: ``"pass"`` (``max_kl < threshold``), ``"fail"`` or
    ``"diverged"`` per run; ``"k/n pass"`` on the ``mean`` row, diverged runs counting as failures.
    """
    steps = sorted(steps)
    runs = per_run(df, first_n_steps=steps[-1], checkpoints=steps)
    value_cols = [f"kl_step{s}" for s in steps] + ["max_kl", "quality"]
    out = []
    for (method, lr), grp in runs.groupby(["method", "lr"], sort=True, dropna=False):
        run_rows = []
        for r in grp.to_dict("records"):
            row = {"row": "run", "method": method, "lr": lr, "seed": r["seed"], "status": r["status"]}
            row.update({f"kl_step{s}": r[f"kl_step{s}"] for s in steps})
            stab = "diverged" if r["diverged"] else ("pass" if r["max_kl"] < threshold else "fail")
            row.update(max_kl=r["max_kl"], window_end=r["window_end"], quality=r["quality"], stability=stab)
            run_rows.append(row)
        out.extend(run_rows)
        data = [row for row in run_rows if row["stability"] != "diverged"]
        n_pass = sum(row["stability"] == "pass" for row in run_rows)
        n_div = len(run_rows) - len(data)
        stats = {c: mean_spread(row[c] for row in data) for c in value_cols}
        for i, name in enumerate(("mean", "std", "ci95", "n")):
            summary = {"row": name, "method": method, "lr": lr, "seed": math.nan, "status": ""}
            summary.update({c: stats[c][i] for c in value_cols})
            summary["window_end"] = math.nan
            summary["stability"] = ""
            if name == "mean":
                div = f", {n_div} diverged" if n_div else ""
                summary["stability"] = f"{n_pass}/{len(run_rows)} pass{div}"
            out.append(summary)
    cols = ["row", "method", "lr", "seed", "status", *value_cols[:-2], "max_kl", "window_end"]
    table = pd.DataFrame(out, columns=[*cols, "quality", "stability"])
    table["seed"] = table["seed"].astype("Int64")
    return table


def fmt_number(x: float, digits: int = 3) -> str:
    """Compact number, ``—`` for NaN."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def checkpoint_markdown(table: pd.DataFrame, *, threshold: float) -> str:
    """Render :func:`checkpoint_table` as Markdown: one block per method x lr, runs then a summary line
    ``mean ± std [±95% CI half-width] (n)``."""
    kl_cols = [c for c in table.columns if c.startswith("kl_step")]
    header = ["method", "lr", "seed", *[f"KL @ {c[7:]}" for c in kl_cols], "max KL", "quality", "stability"]
    lines = [
        f"KL (nats, sequence-level; TRL's logged `kl`) at checkpoint steps. Stability: max KL < {threshold:g} "
        "through the last checkpoint, without divergence. Summary rows: mean ± std [± 95% CI half-width] "
        "(n seeds), diverged runs excluded.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for (method, lr), grp in table.groupby(["method", "lr"], sort=True, dropna=False):
        by = {name: g.iloc[0] for name, g in grp[grp["row"] != "run"].groupby("row")}
        for r in grp[grp["row"] == "run"].itertuples(index=False):
            cells = [method_label(method), lr_tag(lr), fmt_number(r.seed), *[fmt_number(getattr(r, c)) for c in kl_cols]]
            lines.append("| " + " | ".join([*cells, fmt_number(r.max_kl), fmt_number(r.quality), r.stability]) + " |")

        def summary(col: str) -> str:
            m, s, h, n = (by[k][col] for k in ("mean", "std", "ci95", "n"))
            if n == 0:
                return "—"
            return fmt_number(m) if n == 1 else f"{fmt_number(m)} ± {fmt_number(s, 2)} [±{fmt_number(h, 2)}] ({int(n)})"

        cells = [f"**{method_label(method)}**", lr_tag(lr), "mean", *[summary(c) for c in kl_cols]]
        lines.append(
            "| " + " | ".join([*cells, summary("max_kl"), summary("quality"), by["mean"]["stability"]]) + " |"
        )
    return "\n".join(lines) + "\n"


def stability_map(df: pd.DataFrame, *, first_n_steps: int) -> pd.DataFrame:
    """Per method x lr: max KL over the first ``first_n_steps`` steps of each run, summarised across seeds.

    Columns: method, lr, first_n_steps, n_runs, n_diverged, max_kl_mean, max_kl_std, max_kl_min,
    max_kl_max (over non-diverged runs; nats, sequence-level).
    """
    runs = per_run(df, first_n_steps=first_n_steps)
    rows = []
    for (method, lr), grp in runs.groupby(["method", "lr"], sort=True, dropna=False):
        ok = grp.loc[~grp["diverged"], "max_kl"].dropna()
        mean, std, _, _ = mean_spread(ok)
        rows.append(
            {
                "method": method,
                "lr": lr,
                "first_n_steps": first_n_steps,
                "n_runs": len(grp),
                "n_diverged": int(grp["diverged"].sum()),
                "max_kl_mean": mean,
                "max_kl_std": std,
                "max_kl_min": ok.min() if len(ok) else math.nan,
                "max_kl_max": ok.max() if len(ok) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def frontier(df: pd.DataFrame) -> pd.DataFrame:
    """Per method x lr x seed: final KL and quality, the points of a KL-quality frontier.

    ``final_kl``: mean ``kl`` of the last 3 logged steps; ``final_probe_kl`` (+ per token, and its
    ``probe_step``): the last probe measurement, NaN without probe. Both in nats (sequence-level).
    """
    cols = [*KEYS, "beta", "status", "last_step", "final_kl", "final_probe_kl", "final_probe_kl_per_token"]
    return per_run(df).loc[:, [*cols, "probe_step", "quality_metric", "quality"]]


# ------------------------------------------------------------------------------------------------ verdict
