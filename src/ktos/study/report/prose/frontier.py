"""The whole-trajectory readings of "is KTO-S more than a smaller step?" in words: the step grid's envelope and
early stopping (:mod:`ktos.study.readings.checkpoint_envelope`), and the fourth amendment's best checkpoints and
matched-KL frontier over item sets (:mod:`ktos.study.readings.matched_frontier`). Every number comes from those
tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ....loss_types import KTO, KTO_S, KTO_ZERO
from ....runnames import lr_tag, method_label
from ...readings.matched_frontier import MARGIN
from .numbers import fmt


def frontier_sentences(envelope: pd.DataFrame, stopping: pd.DataFrame) -> list[str]:
    """The two whole-trajectory readings of "more than a smaller step?"
    (:mod:`ktos.study.readings.checkpoint_envelope`)."""
    out: list[str] = []
    for method in (KTO_S, KTO_ZERO) if not envelope.empty else ():
        env = envelope[envelope["method"] == method]
        if env.empty:
            continue
        above = env[env["diff_low"] > 0]["kl_budget"].tolist()
        below = env[env["diff_high"] < 0]["kl_budget"].tolist()
        spans = "; ".join(
            f"{fmt(r.kl_budget)} nats: {fmt(r.envelope)} against KTO's {fmt(r.envelope - r.diff_vs_kto)} "
            f"({fmt(r.diff_vs_kto)} [{fmt(r.diff_low)}, {fmt(r.diff_high)}])"
            for r in env.itertuples(index=False)
        )
        reading = (
            "above KTO's at " + ", ".join(fmt(b) for b in above) + " nats" if above else "nowhere above KTO's"
        ) + ("; below it at " + ", ".join(fmt(b) for b in below) + " nats" if below else "")
        out.append(
            f"Envelope of accuracy against probe KL over all checkpoints, {method_label(method)} against "
            f"KTO (best mean "
            f"task accuracy within each KL budget, seed bootstrap): {spans}. {method_label(method)}'s "
            f"envelope lies {reading}."
        )
    if not stopping.empty and KTO in set(stopping["method"]):
        kto = stopping.set_index("method").loc[KTO]
        for row in stopping[stopping["method"] != KTO].itertuples(index=False):
            if row.diff_low > 0 and row.boot_diff_low > 0:
                reading = "better than KTO"
            elif row.diff_high < 0 and row.boot_diff_high < 0:
                reading = "worse than KTO"
            else:
                reading = "not distinguishable from KTO"
            out.append(
                f"Early stopping (each method ships its checkpoint with the best validation-half accuracy): "
                f"{method_label(row.method)} picks lr {lr_tag(row.lr)} at step {int(row.step)}, test-half accuracy "
                f"{fmt(row.test_accuracy)} [{fmt(row.test_low)}, {fmt(row.test_high)}], against KTO's "
                f"{fmt(kto['test_accuracy'])} "
                f"(lr {lr_tag(kto['lr'])}, step {int(kto['step'])}); base model {fmt(row.base_test_accuracy)}. Paired "
                f"difference {fmt(row.diff_vs_kto)} [{fmt(row.diff_low)}, {fmt(row.diff_high)}], "
                f"bootstrap with the choice "
                f"repeated [{fmt(row.boot_diff_low)}, {fmt(row.boot_diff_high)}]: {reading}."
            )
    return out


def _interval(value: float, low: float, high: float) -> str:
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def matched_frontier_sentences(best: pd.DataFrame, frontier: pd.DataFrame) -> list[str]:
    """The fourth amendment's readings (:mod:`ktos.study.readings.matched_frontier`): where each method's best
    checkpoint lies, what it reports, and the per-bin comparison at matched KL with the equivalence margin."""
    if best.empty:
        return []
    n = best.iloc[0]
    where = "; ".join(
        f"{method_label(r.method)} lr {lr_tag(r.lr)} step {int(r.step)} (KL {fmt(r.kl)}; choose-set accuracy "
        f"{fmt(r.choose_accuracy)}, {fmt(r.choose_accuracy_at_last_step)} at the last step; "
        + ("inside the grid)" if r.inside else f"on the grid's edge: lr {r.lr_position}, step {r.step_position})")
        for r in best.itertuples(index=False)
    )
    out = [
        f"Best checkpoint of each method, chosen on the choose items ({int(n.n_bases)} bases, {int(n.n_runs)} runs "
        f"a checkpoint, {int(n.n_items)} held-out items in three sets): {where}."
    ]
    kto = best.set_index("method").loc[KTO] if KTO in set(best["method"]) else None
    for r in best[best["method"] != KTO].itertuples(index=False):
        if kto is None:
            break
        out.append(
            f"Early stopping, read on the report items: {method_label(r.method)} "
            f"{_interval(r.report_accuracy, r.report_low, r.report_high)} against KTO's {fmt(kto['report_accuracy'])}; "
            f"difference {_interval(r.diff_vs_kto, r.diff_low, r.diff_high)} (detectable {fmt(r.detectable)}): "
            f"{_call_words(r.call)}."
        )
    for (lo, hi), grp in frontier.groupby(["kl_low", "kl_high"], sort=True):
        rows = grp.set_index("method")
        if KTO not in rows.index or not np.isfinite(rows.loc[KTO, "envelope_accuracy"]):
            out.append(f"At matched KL {fmt(lo)}–{fmt(hi)} nats KTO has no checkpoint: no comparison.")
            continue
        parts = []
        for method, r in rows.drop(index=KTO).iterrows():
            if not np.isfinite(r["envelope_accuracy"]):
                parts.append(f"{method_label(str(method))} has no checkpoint in the bin")
                continue
            parts.append(
                f"{method_label(str(method))} {fmt(r['envelope_accuracy'])} (lr {lr_tag(r['lr'])}, "
                f"step {int(r['step'])}), "
                f"difference {_interval(r['diff_vs_kto'], r['diff_low'], r['diff_high'])}, detectable "
                f"{fmt(r['detectable'])}: {_call_words(r['call'])}"
                + (
                    f" (both in the bin in {fmt(100 * r['share_defined'])}% of resamples)"
                    if r["share_defined"] < 0.95
                    else ""
                )
            )
        k = rows.loc[KTO]
        out.append(
            f"At matched KL {fmt(lo)}–{fmt(hi)} nats, on the envelope items (never used for choosing): KTO "
            f"{fmt(k['envelope_accuracy'])} (lr {lr_tag(k['lr'])}, step {int(k['step'])}); " + "; ".join(parts) + "."
        )
    return out


def _call_words(call: str) -> str:
    """A margin call (:func:`ktos.study.readings.matched_frontier.call`) as the verdict says it."""
    return {
        "the same": f"the same within ±{fmt(MARGIN)}",
        "differs": "differs",
        "undecided": f"the data do not decide at ±{fmt(MARGIN)}",
    }.get(call, "no data")


def curve_frontier_sentences(table: pd.DataFrame) -> list[str]:
    """Per KL and bin, the fifth amendment's frontier read from fitted curves: KTO-S minus KTO in accuracy at the
    bin centre with its t interval over bases and the call, the realised detectable difference against the margin,
    and the log-probability difference beside it."""
    names = {"policy_kl": "policy KL (the verdict)", "probe_kl": "probe KL (beside it)"}
    text = []
    for r in table.itertuples(index=False):
        where = f"At {names.get(r.kl, r.kl)} {fmt(r.kl_read)} nats (bin {fmt(r.kl_low)}–{fmt(r.kl_high)})"
        if r.call == "not covered":
            text.append(f"{where}: not covered, {r.n_bases} of {r.n_bases_planned} bases' runs reach it.")
            continue
        power = "reaches" if r.reaches_margin else "does not reach"
        text.append(
            f"{where}, fitted curves over {r.n_bases} bases ({r.runs_read} of {r.runs} runs read, {r.n_items} items): "
            f"KTO-S minus KTO in accuracy {fmt(r.diff)} [{fmt(r.low)}, {fmt(r.high)}] (t over base means), "
            f"{r.call} at the ±{fmt(r.margin)} margin; realised detectable difference {fmt(r.detectable_realised)} "
            f"({power} the margin); the correct answer's log-probability {fmt(r.logprob_diff)} "
            f"[{fmt(r.logprob_low)}, {fmt(r.logprob_high)}] nats; collapsed runs: KTO {r.collapsed_kto}, KTO-S "
            f"{r.collapsed_kto_s}."
        )
    return text
