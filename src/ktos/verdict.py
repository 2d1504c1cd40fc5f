r"""The verdict: a short paragraph comparing KTO-S with KTO, computed from the tidy trajectory table,
and the writer of every table file (``ktos tables``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .rundir import KEYS, read_table
from .runnames import METHODS, lr_tag, method_label
from .stats import mean_spread
from .tables import (
    DEFAULT_CHECKPOINTS,
    fmt_number,
    checkpoint_markdown,
    checkpoint_table,
    default_lr,
    frontier,
    per_run,
    stability_map,
    table_beta,
)

log = logging.getLogger(__name__)


def _pm(mean: float, std: float, n: int) -> str:
    """``"X ± Y"``, or just ``"X"`` for a single seed."""
    return fmt_number(mean) if n < 2 else f"{fmt_number(mean)} ± {fmt_number(std, 2)}"


def _probe_sentence(ok: pd.DataFrame) -> list[str]:
    """The held-out probe's KL of both methods at the last step every run measured it (empty if none)."""
    probe = ok[np.isfinite(ok["probe_kl"].astype(float))] if "probe_kl" in ok else ok.iloc[:0]
    if probe.empty or set(probe["method"]) != set(METHODS):
        return []
    last = int(min(g["step"].max() for _, g in probe.groupby(list(KEYS), dropna=False)))
    at = {m: mean_spread(probe.loc[(probe["method"] == m) & (probe["step"] == last), "probe_kl"]) for m in METHODS}
    (mk, sk, _, nk), (ms, ss, _, ns) = at["kto"], at["kto_s"]
    if not (nk and ns):
        return []
    return [
        f"On the held-out KL probe (fixed mismatched pairs, less noisy than one batch) at step {last}, "
        f"KTO-S's KL is {_pm(ms, ss, ns)} nats against KTO's {_pm(mk, sk, nk)}."
    ]


def verdict(df: pd.DataFrame, *, step: int = 20, threshold: float, lr: float | None = None) -> str:
    """A short paragraph comparing KTO-S with KTO, computed from the table at one lr (default: :func:`default_lr`).

    Reports mean ± std of ``kl`` at ``step`` across non-diverged seeds (the last step every such run of
    both methods logged, if some run stopped earlier: the text says which), mean final quality, whether
    the 95% CIs overlap, how many runs meet the stability criterion (max KL < ``threshold`` through the
    step, no divergence) and which runs diverged.
    """
    lr = default_lr(df, lr)
    sub = df[np.isclose(df["lr"], lr, rtol=1e-9, atol=0)]
    beta = table_beta(sub)
    where = f"lr {lr_tag(lr)}" + (f", β {beta:g}" if beta is not None else "")
    present = [m for m in METHODS if m in set(sub["method"])]
    if len(present) < 2:
        have = ", ".join(method_label(m) for m in present) or "no KTO or KTO-S"
        return f"At {where} the table holds {have} runs only: no comparison of KTO-S with KTO is possible."

    ok = sub[(sub["status"] != "diverged") & np.isfinite(sub["kl"].astype(float))]
    step_sets = [set(g["step"]) for _, g in ok.groupby(list(KEYS), dropna=False)]
    common = set.intersection(*step_sets) if step_sets else set()
    used = max((x for x in common if x <= step), default=None)
    if not step_sets:
        used = step  # every run diverged: only the divergence counts remain to report
    elif used is None:
        return f"At {where} no step ≤ {step} was logged by every non-diverged run: nothing to compare."
    sentences = []
    if used != step:
        sentences.append(
            f"Not every run reached step {step}; this compares step {used}, the last step all "
            "non-diverged runs logged."
        )
    runs = per_run(sub, first_n_steps=used)

    s: dict[str, dict[str, Any]] = {}
    for m in METHODS:
        mruns = runs[runs["method"] == m]
        s[m] = {
            "kl": mean_spread(ok.loc[(ok["method"] == m) & (ok["step"] == used), "kl"]),
            "quality": mean_spread(mruns.loc[~mruns["diverged"], "quality"]),
            "metric": next(iter(mruns["quality_metric"].dropna()), None),
            "n_runs": len(mruns),
            "n_pass": int(((mruns["max_kl"] < threshold) & ~mruns["diverged"]).sum()),
            "div_steps": sorted(int(x) for x in mruns.loc[mruns["diverged"], "last_step"]),
        }

    (mk, sk, hk, nk), (ms, ss, hs, ns) = s["kto"]["kl"], s["kto_s"]["kl"]
    if nk and ns:
        seeds = _seeds(nk) if nk == ns else f"{ns} (KTO-S) and {nk} (KTO) seeds"
        nums = f"{_pm(ms, ss, ns)} nats against KTO's {_pm(mk, sk, nk)} over {seeds}"
        nums += " (mean ± std)" if max(nk, ns) > 1 else ""
        overlap = nk > 1 and ns > 1 and (ms - hs) <= (mk + hk) and (mk - hk) <= (ms + hs)
        if ms < mk:
            ratio = f", {fmt_number(ms / mk)}× KTO's" if mk > 0 else ""
            lower = "not distinguishably lower" if overlap else "lower"
            sentences.append(f"At step {used} ({where}), KTO-S's KL is {lower}: {nums}{ratio}.")
        else:
            sentences.append(f"KTO-S is not more stable here: at step {used} ({where}) its KL is {nums}.")
        if nk > 1 and ns > 1:
            sentences.append(
                "The 95% confidence intervals overlap, so these seeds do not resolve the difference."
                if overlap
                else "The 95% confidence intervals do not overlap."
            )
    else:
        for m, (mean, std, _, n) in (("kto", s["kto"]["kl"]), ("kto_s", s["kto_s"]["kl"])):
            if n:
                sentences.append(
                    f"At step {used} ({where}) only {method_label(m)} has runs left to compare: "
                    f"its KL is {_pm(mean, std, n)} nats over {n} seed{'s' if n > 1 else ''}."
                )
        if not (nk or ns):
            sentences.append(f"At {where} every run diverged: no KL to compare.")

    sentences.extend(_probe_sentence(ok))
    metric = (s["kto_s"]["metric"] or s["kto"]["metric"] or "quality").replace("_", " ")
    qual = [
        f"{method_label(m)} {_pm(q[0], q[1], q[3])}" for m in ("kto_s", "kto") if (q := s[m]["quality"])[3]
    ]
    sentences.append(f"Final {metric}: {' against '.join(qual)}." if qual else "No quality was measured.")
    sentences.append(
        f"KTO-S stays below the threshold {threshold:g} through step {used} without diverging in "
        f"{s['kto_s']['n_pass']}/{s['kto_s']['n_runs']} runs, KTO in {s['kto']['n_pass']}/{s['kto']['n_runs']}."
    )
    for m in METHODS:
        div, n = s[m]["div_steps"], s[m]["n_runs"]
        if div:
            which = (
                f"all {n}" if len(div) == n and n > 1 else ("the only" if n == 1 else f"{len(div)} of {n}")
            )
            plural = len(div) > 1
            sentences.append(
                f"{which.capitalize()} {method_label(m)} run{'s' if n > 1 else ''} diverged "
                f"(at step{'s' if plural else ''} {', '.join(map(str, div))}) and "
                f"{'are' if plural else 'is'} left out of the means."
            )
    unfinished = runs.loc[~runs["status"].isin(["completed", "diverged"]), "status"]
    if len(unfinished):
        kinds = ", ".join(sorted(set(unfinished)))
        sentences.append(
            f"{len(unfinished)} of these runs are not completed (status {kinds}): numbers may change."
        )
    return " ".join(sentences)


def _seeds(n: int) -> str:
    """``"3 seeds"`` / ``"one seed each"``."""
    return f"{n} seeds" if n > 1 else "one seed each"


# ------------------------------------------------------------------------------------------------ writing


def write_tables(
    table_csv: str | Path,
    out_dir: str | Path,
    *,
    threshold: float,
    checkpoints: Sequence[int] = DEFAULT_CHECKPOINTS,
    first_n_steps: int | None = None,
    lr: float | None = None,
) -> list[Path]:
    """Write kl_checkpoints.csv/.md, stability_map.csv, frontier.csv and verdict.md from the table.

    ``first_n_steps`` (stability map window) defaults to ``max(checkpoints)``; the verdict compares
    step ``max(checkpoints)`` at ``lr`` (default :func:`default_lr`), then each other lr in the table.
    """
    df = read_table(table_csv)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last = max(checkpoints)
    n = first_n_steps if first_n_steps is not None else last
    table = checkpoint_table(df, checkpoints, threshold)
    paths = [
        out / "kl_checkpoints.csv",
        out / "kl_checkpoints.md",
        out / "stability_map.csv",
        out / "frontier.csv",
        out / "verdict.md",
    ]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(checkpoint_markdown(table, threshold=threshold))
    stability_map(df, first_n_steps=n).to_csv(paths[2], index=False)
    frontier(df).to_csv(paths[3], index=False)
    lr0 = default_lr(df, lr)
    text = ["# Verdict", "", verdict(df, step=last, threshold=threshold, lr=lr0), ""]
    others = [lr for lr in sorted(df["lr"].dropna().unique()) if not np.isclose(lr, lr0, rtol=1e-9, atol=0)]
    if others:
        text += ["## Other learning rates", ""]
        text += [f"- {verdict(df, step=last, threshold=threshold, lr=lr)}" for lr in others] + [""]
    paths[4].write_text("\n".join(text))
    log.info("wrote %d tables to %s", len(paths), out)
    return paths
