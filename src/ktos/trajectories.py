r"""Training trajectories: run dirs -> one tidy table -> checkpoint tables, stability map, verdict.

Units. ``kl`` is TRL's logged KL reference point ``z0``: the batch mean over mismatched prompt/completion
pairs of ``log pi_theta(y'|x) - log pi_ref(y'|x)`` summed over completion tokens, clamped at 0, in
sequence-level nats. ``probe_kl`` is the same quantity on a fixed held-out probe (sequence-level nats) and
``probe_kl_per_token`` that divided by the completion length (nats/token). ``rewards_*`` are TRL's logged
batch means of ``beta * r`` (nats scaled by ``beta``).

Statistics across seeds. For ``n`` seeds with values ``x_i``: mean, sample standard deviation
``std = sqrt(sum (x_i - mean)^2 / (n - 1))`` and the 95% confidence half-width
``h = t_{0.975, n-1} * std / sqrt(n)`` (Student t). With one seed ``std`` and ``h`` are NaN.

Diverged runs (``status == "diverged"``) are never averaged as data: their rows up to the divergence
step stay in the table and in per-run rows, they count as failing the stability criterion, and every
mean, spread and extreme across seeds is taken over the runs that did not diverge.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

log = logging.getLogger(__name__)

#: Columns of the tidy trajectory table, in order (see the interface spec).
COLUMNS: tuple[str, ...] = (
    "method",
    "lr",
    "beta",
    "seed",
    "step",
    "kl",
    "probe_kl",
    "probe_kl_per_token",
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "learning_rate",
    "grad_norm",
    "elapsed_s",
    "status",
    "quality_metric",
    "quality",
)
#: Trajectory keys as logged by TRL -> table columns.
RENAME: dict[str, str] = {
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "rewards/margins": "rewards_margins",
}
#: Methods in display order, and how papers write them.
METHODS: tuple[str, ...] = ("kto", "kto_s")
METHOD_LABELS: dict[str, str] = {"kto": "KTO", "kto_s": "KTO-S"}
#: The plan note's stability criterion: KL below 0.1 nats through step 20 (a default, not a result).
DEFAULT_THRESHOLD: float = 0.1
DEFAULT_CHECKPOINTS: tuple[int, ...] = (5, 10, 15, 20)
#: ``status`` of a run dir that has a trajectory but no ``run_info.json``.
NO_RUN_INFO = "no_run_info"
#: Files of a run directory (written by ktos.trainer.TrajectoryCallback and ktos.run.train).
TRAJECTORY_FILE = "trajectory.jsonl"
RUN_INFO_FILE = "run_info.json"
KEYS: tuple[str, ...] = ("method", "lr", "seed")

# Student t 0.975 quantiles for 1..30 degrees of freedom (standard tables); beyond 30 a Cornish-Fisher
# expansion around z = 1.959964 is accurate to < 1e-4.
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
    2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
    2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip


def t975(dof: int) -> float:
    """Two-sided 95% Student t critical value ``t_{0.975, dof}`` (``dof >= 1``)."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = 1.959964
    return (
        z
        + (z**3 + z) / (4 * dof)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * dof**3)
    )


def mean_spread(values: Iterable[float]) -> tuple[float, float, float, int]:
    """``(mean, std, 95% CI half-width, n)`` over the finite values; NaN where undefined."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, math.nan, 1
    std = float(x.std(ddof=1))
    return float(x.mean()), std, t975(n - 1) * std / math.sqrt(n), n


def fmt_lr(lr: float) -> str:
    """Compact learning rate, 3 significant digits: ``5e-06`` -> ``"5e-6"``, ``0.001`` -> ``"0.001"``."""
    if lr is None or not np.isfinite(lr):
        return "?"
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{lr:.3g}")


def method_label(method: str) -> str:
    """``"kto_s"`` -> ``"KTO-S"``; unknown names are returned unchanged."""
    return METHOD_LABELS.get(method, method)


# ----------------------------------------------------------------------------------------------- reading


def _infer_from_name(run_dir: Path) -> dict[str, Any]:
    """Best-effort method/lr/seed from a run dir's path (used only when ``run_info.json`` is missing)."""
    name = str(run_dir).lower()
    lr = re.search(r"lr[_=-]?([0-9.]+(?:e[+-]?[0-9]+)?)", name)
    seed = re.search(r"seed[_=-]?([0-9]+)", name)
    return {
        "method": "kto_s" if re.search(r"kto[_-]s(?![a-z])", name) else "kto",
        "lr": float(lr.group(1)) if lr else math.nan,
        "seed": int(seed.group(1)) if seed else math.nan,
    }


def read_trajectory(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``trajectory.jsonl``, one JSON object per line (empty when the file is absent).

    A truncated last line (a run still writing, or killed mid-write) is skipped with a warning; a
    bad line anywhere else raises ``ValueError``.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
            log.warning("%s: skipping an incomplete last line (run still writing?)", path)
    return records


def read_run(run_dir: str | Path) -> pd.DataFrame:
    """One run dir (``trajectory.jsonl`` + ``run_info.json``) -> rows of the tidy table.

    Run-level fields (method, lr = ``run_info["learning_rate"]``, beta, seed, status, quality) are
    repeated on every row. Without ``run_info.json`` the run is still read: status ``"no_run_info"``,
    method/lr/seed guessed from the path (``kto_s``, ``lr5e-06``, ``seed0``; NaN when absent).
    A diverged run keeps its rows up to ``diverged_at_step`` only. A step logged twice keeps its last line.
    """
    run_dir = Path(run_dir)
    traj = run_dir / TRAJECTORY_FILE
    if not traj.is_file():
        raise FileNotFoundError(f"{run_dir}: no {TRAJECTORY_FILE}")
    info_path = run_dir / RUN_INFO_FILE
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        quality = info.get("quality") or {}
        run = {
            "method": info.get("method") or ("kto_s" if info.get("use_kto_s") else "kto"),
            "lr": info.get("learning_rate", math.nan),
            "beta": info.get("beta", math.nan),
            "seed": info.get("seed", math.nan),
            "status": info.get("status", "running"),
            "quality_metric": quality.get("metric"),
            "quality": quality.get("value", math.nan),
        }
        diverged_at = info.get("diverged_at_step")
    else:
        log.warning("%s: no run_info.json; method/lr/seed guessed from the path", run_dir)
        run = {**_infer_from_name(run_dir), "beta": math.nan, "status": NO_RUN_INFO}
        run.update(quality_metric=None, quality=math.nan)
        diverged_at = None

    rows = pd.DataFrame(read_trajectory(traj)).rename(columns=RENAME)
    if rows.empty or "step" not in rows:
        rows = pd.DataFrame({"step": pd.Series(dtype=int)})
    rows = rows.drop_duplicates("step", keep="last").sort_values("step")
    if run["status"] == "diverged" and diverged_at is not None:
        rows = rows[rows["step"] <= diverged_at]
    for col, value in run.items():
        rows[col] = value
    for col in COLUMNS:
        if col not in rows:
            rows[col] = math.nan
    numeric = [c for c in COLUMNS if c not in ("method", "status", "quality_metric")]
    rows[numeric] = rows[numeric].apply(pd.to_numeric, errors="coerce")
    return rows.loc[:, list(COLUMNS)].reset_index(drop=True)


def _expand_run_dirs(run_dirs: Iterable[str | Path]) -> list[Path]:
    """Run dirs as given; a dir without ``trajectory.jsonl`` stands for the run dirs below it."""
    out: list[Path] = []
    for d in map(Path, run_dirs):
        if (d / TRAJECTORY_FILE).is_file():
            out.append(d)
            continue
        found = sorted(p.parent for p in d.rglob(TRAJECTORY_FILE))
        if not found:
            raise FileNotFoundError(f"{d}: no trajectory.jsonl in it or below it")
        out.extend(found)
    return out


def extract(run_dirs: Iterable[str | Path], out_csv: str | Path) -> pd.DataFrame:
    """Read run dirs into the tidy table, sorted by method, lr, seed, step, and write it to ``out_csv``.

    A dir holding no ``trajectory.jsonl`` is searched below for run dirs. Two runs with the same
    (method, lr, seed) are an error. Logs the number of runs and rows and warns about diverged,
    unfinished and info-less runs.
    """
    dirs = _expand_run_dirs(run_dirs)
    frames: list[pd.DataFrame] = []
    seen: dict[tuple[Any, ...], Path] = {}
    n_div = 0
    for d in tqdm(dirs, desc="reading runs", unit="run", disable=len(dirs) < 20):
        rows = read_run(d)
        frames.append(rows)
        if rows.empty:
            log.warning("%s: empty trajectory", d)
            continue
        key = tuple(rows[k].iat[0] for k in KEYS)
        if key in seen:
            raise ValueError(f"{d} and {seen[key]} are both method={key[0]} lr={key[1]} seed={key[2]}")
        seen[key] = d
        status = rows["status"].iat[0]
        if status == "diverged":
            n_div += 1
            log.warning("%s (%s, lr %g, seed %s) diverged at step %d", d, *key, rows["step"].max())
        elif status != "completed":
            log.warning("%s (%s, lr %g, seed %s) has status %r: read as is", d, *key, status)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    df = df.sort_values(["method", "lr", "seed", "step"], kind="mergesort", ignore_index=True)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False)
    log.info("extracted %d runs, %d rows -> %s (%d diverged)", len(seen), len(df), out_csv, n_div)
    return df


def read_table(table_csv: str | Path) -> pd.DataFrame:
    """Read a tidy trajectory table written by :func:`extract` (text columns kept as strings)."""
    df = pd.read_csv(table_csv, dtype={"method": str, "status": str, "quality_metric": str})
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{table_csv}: missing columns {sorted(missing)}")
    return df


# ----------------------------------------------------------------------------------------------- per run


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


def step_stats(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per-step mean, std, 95% CI half-width and n of ``column`` across the non-diverged runs in ``df``.

    ``df`` should hold one method at one lr. Returns columns step, mean, std, ci95, n (steps where no
    run has a finite value are dropped).
    """
    ok = df[(df["status"] != "diverged") & np.isfinite(df[column].astype(float))]
    stats = [(step, *mean_spread(g[column])) for step, g in ok.groupby("step", sort=True)]
    return pd.DataFrame(stats, columns=["step", "mean", "std", "ci95", "n"])


# ------------------------------------------------------------------------------------------------ tables


def checkpoint_table(
    df: pd.DataFrame,
    steps: Sequence[int] = DEFAULT_CHECKPOINTS,
    threshold: float = DEFAULT_THRESHOLD,
) -> pd.DataFrame:
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


def _fmt(x: float, digits: int = 3) -> str:
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
            cells = [method_label(method), fmt_lr(lr), _fmt(r.seed), *[_fmt(getattr(r, c)) for c in kl_cols]]
            lines.append("| " + " | ".join([*cells, _fmt(r.max_kl), _fmt(r.quality), r.stability]) + " |")

        def summary(col: str) -> str:
            m, s, h, n = (by[k][col] for k in ("mean", "std", "ci95", "n"))
            if n == 0:
                return "—"
            return _fmt(m) if n == 1 else f"{_fmt(m)} ± {_fmt(s, 2)} [±{_fmt(h, 2)}] ({int(n)})"

        cells = [f"**{method_label(method)}**", fmt_lr(lr), "mean", *[summary(c) for c in kl_cols]]
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


def _pm(mean: float, std: float, n: int) -> str:
    """``"X ± Y"``, or just ``"X"`` for a single seed."""
    return _fmt(mean) if n < 2 else f"{_fmt(mean)} ± {_fmt(std, 2)}"


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
    where = f"lr {fmt_lr(lr)}" + (f", β {beta:g}" if beta is not None else "")
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
            ratio = f", {_fmt(ms / mk)}× KTO's" if mk > 0 else ""
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
    tables_dir: str | Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    checkpoints: Sequence[int] = DEFAULT_CHECKPOINTS,
    first_n_steps: int | None = None,
    lr: float | None = None,
) -> list[Path]:
    """Write kl_checkpoints.csv/.md, stability_map.csv, frontier.csv and verdict.md from the table.

    ``first_n_steps`` (stability map window) defaults to ``max(checkpoints)``; the verdict compares
    step ``max(checkpoints)`` at ``lr`` (default :func:`default_lr`), then each other lr in the table.
    """
    df = read_table(table_csv)
    out = Path(tables_dir)
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
