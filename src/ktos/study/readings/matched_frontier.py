r"""The frontier at matched KL, read on items never used for choosing (docs/study.md, fourth amendment).

The data: for each method ``m``, learning rate, step ``s`` (every step with task accuracy, and the end) and run
``r = (base, seed)``, the probe KL (sequence-level nats) and each held-out item's outcome (1 right, 0 wrong; from
``run_info.json``). The items are split by position into :data:`ITEM_SETS`: ``choose``, ``report`` and
``envelope``. A *checkpoint* ``c = (lr, s)`` of a method has the probe KL ``K_c`` (mean over its
runs) and on an item set ``S`` the accuracy ``A_c^S`` (mean over its runs and the items of ``S``).

* **Best checkpoint** (:func:`best_checkpoint_table`): the checkpoint with the highest ``A^choose`` (ties:
  smaller learning rate, then earlier step), its ``A^report``, and whether it lies inside the grid (neither the
  smallest nor the largest learning rate, not the last step).
* **Frontier** (:func:`frontier_table`): per KL bin ``[lo, hi)`` of :data:`KL_BINS`, each method's checkpoint
  with the highest ``A^choose`` among those with ``K_c`` in the bin, read as ``A^envelope``; the difference from
  KTO's, per bin (never cumulative).

Intervals: a three-level bootstrap (:data:`N_BOOT` resamples): bases with replacement, seeds within each drawn
base with replacement, and the items of each set with replacement (one draw shared by every method and
checkpoint: paired on items); every mean, bin membership and choice is recomputed. A difference is called
with the equivalence margin ``±MARGIN`` (:func:`call`).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...loss_types import KTO, KTO_S, KTO_ZERO
from .stats import N_BOOT

#: Three disjoint sets of the held-out items by position ``i mod 3``: ``choose`` (items 0, 3, 6, ...: for choosing
#: a checkpoint), ``report`` (1, 4, 7, ...: for reporting the chosen one) and ``envelope`` (2, 5, 8, ...: for
#: reading the frontier, never used for choosing).
ITEM_SETS: tuple[str, ...] = ("choose", "report", "envelope")
#: KL bins (sequence-level nats, lower edge included) in which the methods are compared.
KL_BINS: tuple[tuple[float, float], ...] = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0))
#: The equivalence margin (accuracy), fixed in docs/study.md before the runs.
MARGIN = 0.02
#: Multiplier of the bootstrap sd that gives the difference detected with 80% power at the 5% level.
DETECTABLE_SD = 2.8
_CHOOSE, _REPORT, _ENVELOPE = range(3)


@dataclass
class ItemCheckpoints:
    """Per-item outcomes and probe KL of a study's checkpoints, indexed ``[method, lr, step, run(, item)]`` (NaN
    where missing), with their axes; ``run_base[r]`` is the index of run ``r``'s base in ``bases``."""

    methods: list[str]
    lrs: np.ndarray
    steps: np.ndarray
    bases: list[str]
    seeds: np.ndarray
    run_base: np.ndarray
    kl: np.ndarray
    correct: np.ndarray

    @functools.cached_property
    def filled(self) -> np.ndarray:
        """``correct`` with missing outcomes as 0, in float64 (what every resample's weighted means multiply): made
        once, not in each of the bootstrap's resamples."""
        return np.nan_to_num(self.correct).astype(np.float64)

    @property
    def item_sets(self) -> np.ndarray:
        """``[set, item]`` membership (float 0/1) of :data:`ITEM_SETS` by item position ``i mod 3``."""
        n = self.correct.shape[-1]
        return np.stack([(np.arange(n) % len(ITEM_SETS) == k).astype(float) for k in range(len(ITEM_SETS))])


def read_run_infos(path: str) -> list[dict[str, Any]]:
    """The run records of ``run_info.jsonl(.gz)`` (written by ``ktos extract-kl --run-info``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def item_checkpoints(
    df: pd.DataFrame, infos: list[dict[str, Any]], regime: str, kl: str = "probe_kl"
) -> ItemCheckpoints | None:
    """The checkpoints of ``regime``'s completed runs that recorded each item's outcome at their quality steps
    (``step_quality_correct``) and at the end (``quality.correct``), with the KL column ``kl`` of the trajectory
    table ``df`` at those steps (the probe KL, or ``policy_kl``); ``None`` when no run recorded them."""
    records = []
    for info in infos:
        steps = info.get("step_quality_correct") or {}
        final = (info.get("quality") or {}).get("correct")
        if info.get("status") != "completed" or (info.get("regime") or "main") != regime or not steps or not final:
            continue
        key = (
            info.get("method") or KTO,
            float(info["learning_rate"]),
            (info.get("base") or {}).get("name") or "",
            info["seed"],
        )
        last = int(info["config"]["max_steps"])
        records += [(*key, int(s), bits) for s, bits in steps.items()] + [(*key, last, final)]
    if not records:
        return None
    rec = pd.DataFrame(records, columns=["method", "lr", "base", "seed", "step", "correct"])
    measured = df[df["regime"] == regime].assign(base=lambda d: d["base"].fillna(""))
    measured = measured.dropna(subset=[kl]).drop_duplicates(["method", "lr", "base", "seed", "step"], keep="last")
    rec = rec.merge(measured[["method", "lr", "base", "seed", "step", kl]].rename(columns={kl: "kl"}), how="left",
                    on=["method", "lr", "base", "seed", "step"])  # fmt: skip
    methods = [m for m in (KTO, KTO_S, KTO_ZERO) if m in set(rec["method"])]
    lrs, steps = np.sort(rec["lr"].unique()), np.sort(rec["step"].unique())
    runs = rec[["base", "seed"]].drop_duplicates().sort_values(["base", "seed"]).reset_index(drop=True)
    bases = sorted(runs["base"].unique())
    n_items = max(len(b) for b in rec["correct"])
    shape = (len(methods), len(lrs), len(steps), len(runs))
    kl_arr = np.full(shape, np.nan)
    correct = np.full((*shape, n_items), np.nan, dtype=np.float32)
    run_index = {(b, s): i for i, (b, s) in enumerate(runs.itertuples(index=False))}
    for row in rec.itertuples(index=False):
        at = (methods.index(row.method), int(np.searchsorted(lrs, row.lr)), int(np.searchsorted(steps, row.step)),
              run_index[(row.base, row.seed)])  # fmt: skip
        kl_arr[at] = row.kl
        correct[at] = np.frombuffer(row.correct.encode(), dtype=np.uint8) - ord("0")
    return ItemCheckpoints(
        methods, lrs, steps, bases, runs["seed"].to_numpy(), np.asarray([bases.index(b) for b in runs["base"]]),
        kl_arr, correct,
    )  # fmt: skip


@dataclass
class _Means:
    """Checkpoint means under one set of weights: ``kl[method, lr, step]`` and ``acc[method, lr, step, set]``."""

    kl: np.ndarray
    acc: np.ndarray


def _means(cp: ItemCheckpoints, run_w: np.ndarray, item_w: np.ndarray) -> _Means:
    """Weighted checkpoint means: runs weighted by ``run_w`` (counts), the items of each set by ``item_w[set]``."""
    present = np.isfinite(cp.correct[..., 0])
    per_run = cp.filled @ (item_w / item_w.sum(-1, keepdims=True)).T  # [m, l, s, r, set]
    w = run_w * present
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.einsum("mlsr,mlsrk->mlsk", w, per_run) / w.sum(-1)[..., None]
        finite = np.isfinite(cp.kl)
        kl = (run_w * np.nan_to_num(cp.kl)).sum(-1) / (run_w * finite).sum(-1)
    return _Means(kl=np.where((run_w * finite).sum(-1) > 0, kl, np.nan), acc=acc)


def _argmax(values: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per method, the flat (lr, step) index of the largest allowed finite value (the first on ties); -1 if none."""
    flat = np.where(allowed & np.isfinite(values), values, -np.inf).reshape(values.shape[0], -1)
    best = flat.argmax(-1)
    return np.where(np.isfinite(flat.max(-1)), best, -1)


def _pick(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[method, lr, step]`` at each method's flat index (NaN for -1)."""
    flat = values.reshape(values.shape[0], -1)
    picked = flat[np.arange(len(index)), np.maximum(index, 0)]
    return np.where(index >= 0, picked, np.nan)


def _readings(cp: ItemCheckpoints, run_w: np.ndarray, item_w: np.ndarray) -> dict[str, np.ndarray]:
    """Every reading under one set of weights: the best checkpoint ``best`` and its report accuracy, and per KL bin
    the chosen checkpoint ``bin_index[method, bin]``, its KL and envelope accuracy."""
    m = _means(cp, run_w, item_w)
    choose = m.acc[..., _CHOOSE]
    everywhere = np.ones_like(choose, dtype=bool)
    best = _argmax(choose, everywhere)
    out = {"best": best, "best_report": _pick(m.acc[..., _REPORT], best)}
    index, kl, env = [], [], []
    for lo, hi in KL_BINS:
        i = _argmax(choose, (m.kl >= lo) & (m.kl < hi))
        index.append(i)
        kl.append(_pick(m.kl, i))
        env.append(_pick(m.acc[..., _ENVELOPE], i))
    out.update(bin_index=np.stack(index, -1), bin_kl=np.stack(kl, -1), bin_envelope=np.stack(env, -1))
    out.update(best_kl=_pick(m.kl, best), best_choose=_pick(choose, best), choose=choose)
    return out


def _resampled_weights(cp: ItemCheckpoints, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One draw of the three-level bootstrap: run weights (bases, then seeds within each drawn base, with
    replacement) and item weights per set (the items of each set with replacement)."""
    run_w = np.zeros(len(cp.run_base))
    for b in rng.integers(0, len(cp.bases), len(cp.bases)):
        mine = np.flatnonzero(cp.run_base == b)
        np.add.at(run_w, rng.choice(mine, len(mine)), 1.0)
    sets = cp.item_sets
    item_w = np.zeros_like(sets)
    for k in range(len(sets)):
        mine = np.flatnonzero(sets[k])
        np.add.at(item_w[k], rng.choice(mine, len(mine)), 1.0)
    return run_w, item_w


def bootstrap(cp: ItemCheckpoints, *, n_boot: int = N_BOOT, seed: int = 0) -> tuple[dict, dict]:
    """The readings on the data as observed, and stacked over ``n_boot`` resamples (first axis)."""
    observed = _readings(cp, np.ones(len(cp.run_base)), cp.item_sets)
    rng = np.random.default_rng(seed)
    draws = [_readings(cp, *_resampled_weights(cp, rng)) for _ in range(n_boot)]
    return observed, {k: np.stack([d[k] for d in draws]) for k in ("best_report", "bin_envelope")}


def call(low: float, high: float, margin: float = MARGIN) -> str:
    """The reading of a difference's interval: ``the same`` inside ``±margin``, ``differs`` when it excludes 0,
    ``undecided`` otherwise (``no data`` when the interval is missing)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "no data"
    if -margin <= low and high <= margin:
        return "the same"
    return "differs" if low > 0 or high < 0 else "undecided"


def _difference(boot: np.ndarray, observed: np.ndarray, i: int, k: int) -> dict[str, Any]:
    """Method ``i`` minus method ``k`` (KTO): the observed difference, its bootstrap interval and detectable
    difference (over the resamples where both are defined, ``share_defined``; none when the data themselves
    give no difference), and the call."""
    diff = boot[:, i] - boot[:, k]
    diff = diff[np.isfinite(diff)]
    if not len(diff) or not np.isfinite(observed[i] - observed[k]):  # no reading on the data: no interval either
        diff = diff[:0]
    low, high = (float(np.quantile(diff, q)) for q in (0.025, 0.975)) if len(diff) else (math.nan, math.nan)
    return {
        "diff_vs_kto": float(observed[i] - observed[k]), "diff_low": low, "diff_high": high,
        "detectable": DETECTABLE_SD * float(diff.std(ddof=1)) if len(diff) > 1 else math.nan,
        "call": call(low, high) if i != k else "", "share_defined": len(diff) / len(boot),
    }  # fmt: skip


def _position(cp: ItemCheckpoints, flat: int) -> tuple[float, int, str, str]:
    """The learning rate and step of a flat checkpoint index, and where each lies on its axis."""
    lr_i, step_i = divmod(flat, len(cp.steps))
    lr_at = "smallest" if lr_i == 0 else "largest" if lr_i == len(cp.lrs) - 1 else "inside"
    return float(cp.lrs[lr_i]), int(cp.steps[step_i]), lr_at, "last" if step_i == len(cp.steps) - 1 else "inside"


def _counts(cp: ItemCheckpoints) -> dict[str, int]:
    return {"n_bases": len(cp.bases), "n_runs": len(cp.run_base), "n_items": cp.correct.shape[-1]}


def best_checkpoint_table(cp: ItemCheckpoints, observed: dict, boot: dict) -> pd.DataFrame:
    """Per method: the best checkpoint by choose-set accuracy, where it lies on the grid, the choose-set accuracy at
    the last step of its learning rate (to show whether it fell after the peak), its report-set accuracy with the
    bootstrap interval, and the difference from KTO's."""
    k = cp.methods.index(KTO) if KTO in cp.methods else 0
    rows = []
    for i, method in enumerate(cp.methods):
        flat = int(observed["best"][i])
        lr, step, lr_at, step_at = _position(cp, flat)
        reports = boot["best_report"][:, i]
        rows.append({
            "method": method, "lr": lr, "step": step, "lr_position": lr_at, "step_position": step_at,
            "inside": lr_at == "inside" and step_at == "inside", "kl": float(observed["best_kl"][i]),
            "choose_accuracy": float(observed["best_choose"][i]),
            "choose_accuracy_at_last_step": float(observed["choose"][i, flat // len(cp.steps), -1]),
            "report_accuracy": float(observed["best_report"][i]),
            "report_low": float(np.nanquantile(reports, 0.025)), "report_high": float(np.nanquantile(reports, 0.975)),
            **_difference(boot["best_report"], observed["best_report"], i, k), **_counts(cp),
        })  # fmt: skip
    return pd.DataFrame(rows)


def frontier_table(cp: ItemCheckpoints, observed: dict, boot: dict) -> pd.DataFrame:
    """Per method and KL bin: the checkpoint chosen in the bin on the choose set, its KL and envelope-set accuracy
    with the bootstrap interval, and the difference from KTO's in the same bin with the margin's call."""
    k = cp.methods.index(KTO) if KTO in cp.methods else 0
    rows = []
    for j, (lo, hi) in enumerate(KL_BINS):
        for i, method in enumerate(cp.methods):
            flat = int(observed["bin_index"][i, j])
            lr, step = _position(cp, flat)[:2] if flat >= 0 else (math.nan, -1)
            env = boot["bin_envelope"][:, i, j] if flat >= 0 else np.empty(0)
            env = env[np.isfinite(env)]
            rows.append({
                "method": method, "kl_low": lo, "kl_high": hi, "lr": lr, "step": step,
                "kl": float(observed["bin_kl"][i, j]), "envelope_accuracy": float(observed["bin_envelope"][i, j]),
                "envelope_low": float(np.quantile(env, 0.025)) if len(env) else math.nan,
                "envelope_high": float(np.quantile(env, 0.975)) if len(env) else math.nan,
                **_difference(boot["bin_envelope"][..., j], observed["bin_envelope"][:, j], i, k),
                "margin": MARGIN, **_counts(cp),
            })  # fmt: skip
    return pd.DataFrame(rows)


#: Columns of the two tables, also of an empty one (runs that kept no per-item outcomes).
_COUNTS = ("n_bases", "n_runs", "n_items")
_DIFFERENCE = ("diff_vs_kto", "diff_low", "diff_high", "detectable", "call", "share_defined")
BEST_CHECKPOINT_COLUMNS = (
    "method", "lr", "step", "lr_position", "step_position", "inside", "kl", "choose_accuracy",
    "choose_accuracy_at_last_step", "report_accuracy", "report_low", "report_high", *_DIFFERENCE, *_COUNTS,
)  # fmt: skip
FRONTIER_COLUMNS = (
    "method", "kl_low", "kl_high", "lr", "step", "kl", "envelope_accuracy", "envelope_low", "envelope_high",
    *_DIFFERENCE, "margin", *_COUNTS,
)  # fmt: skip


def has_item_frontier(df: pd.DataFrame, infos: list[dict[str, Any]], regime: str) -> bool:
    """Whether a study's trajectory table and runs' records make the matched-KL frontier of ``regime``: KTO and
    another method, KTO at two learning rates or more, task accuracy measured along the way, and records that kept
    each held-out item's outcome (the rule :meth:`ktos.study.plan.outputs.Outputs.item_frontier` plans by)."""
    methods = set(df["method"].dropna())
    measured = "step_quality_val" in df and np.isfinite(pd.to_numeric(df["step_quality_val"], errors="coerce")).any()
    kto_lrs = df.loc[(df["method"] == KTO) & (df["regime"] == regime), "lr"].nunique()
    outcomes = any(info.get("step_quality_correct") for info in infos)
    return KTO in methods and len(methods) > 1 and kto_lrs > 1 and bool(measured) and outcomes


def frontier_tables(
    df: pd.DataFrame, infos: list[dict[str, Any]], regime: str, *, n_boot: int = N_BOOT
) -> dict[str, pd.DataFrame]:
    """``best_checkpoint`` and ``frontier`` of ``regime``; ``ValueError`` when its runs kept no per-item outcomes
    or trained one method (a planned frontier the data cannot make is an error, not an empty table)."""
    cp = item_checkpoints(df, infos, regime)
    if cp is None or len(cp.methods) < 2:
        raise ValueError(
            f"the matched-KL frontier of regime {regime!r} needs completed runs of two methods whose records kept "
            "each held-out item's outcome (step_quality_correct; ktos extract-kl --run-info): these have none"
        )
    observed, boot = bootstrap(cp, n_boot=n_boot)
    return {
        "best_checkpoint": best_checkpoint_table(cp, observed, boot),
        "frontier": frontier_table(cp, observed, boot),
    }
