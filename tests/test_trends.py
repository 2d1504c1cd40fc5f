"""Keeps rising or levels off (ktos.study.readings.trend_rules), the equal-window runaway increments, the
whole-trajectory readings (ktos.study.readings.checkpoint_envelope) and the size-against-step fit
(ktos.study.readings.scale), on trajectories whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ktos.study.readings import analysis, checkpoint_envelope, scale, trend_rules
from ktos.study.report.prose import bases_and_sizes

STEPS = np.array([1, *range(5, 151, 5)], dtype=float)


def curve(kind: str, final: float = 4.0, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """A probe trajectory over STEPS: linear, square root, or saturating (flat after about step 40)."""
    t = STEPS / STEPS.max()
    shape = {"linear": t, "sqrt": np.sqrt(t), "saturating": 1 - np.exp(-STEPS / 12)}[kind]
    rng = np.random.default_rng(seed)
    return final * shape / shape[-1] + jitter * rng.standard_normal(len(STEPS))


def test_late_rise_share_and_trend_of_known_curves() -> None:
    rise, final, noise = trend_rules.late_rise(STEPS, curve("linear"))
    assert final == pytest.approx(4.0) and rise == pytest.approx(2.0) and noise == pytest.approx(0.0, abs=1e-9)
    assert trend_rules.run_trend(STEPS, curve("linear"), 0.1)["late_trend"] == trend_rules.RISING
    assert trend_rules.run_trend(STEPS, curve("sqrt"), 0.1)["late_share"] == pytest.approx(1 - math.sqrt(0.5), abs=0.01)
    assert trend_rules.run_trend(STEPS, curve("saturating"), 0.1)["late_trend"] == trend_rules.LEVELS_OFF
    # A rise of 0.1 K(T) hidden in jitter of 0.3 nats decides nothing.
    noisy = curve("saturating") + 0.4 * (STEPS >= 75) * (STEPS - 75) / 75 + 0.3 * np.sin(STEPS)
    assert trend_rules.run_trend(STEPS, noisy, 0.1)["late_trend"] == trend_rules.UNDECIDED


def test_cell_trend_uses_the_interval_of_the_seeds_rises() -> None:
    finals = pd.Series([4.0] * 6)
    assert (
        trend_rules.cell_trend(pd.Series([2.0, 2.1, 1.9, 2.0, 2.2, 1.8]), finals, 0.1)["late_trend"]
        == trend_rules.RISING
    )
    assert (
        trend_rules.cell_trend(pd.Series([0.0, 0.1, -0.1, 0.05, 0.0, -0.05]), finals, 0.1)["late_trend"]
        == trend_rules.LEVELS_OFF
    )
    # mean rise below the bar (0.4) but one wild seed: the interval straddles it
    assert (
        trend_rules.cell_trend(pd.Series([0.0, 0.1, 0.0, 0.1, 0.0, 2.0]), finals, 0.1)["late_trend"]
        == trend_rules.UNDECIDED
    )


def cells(rows: list[tuple[str, float, str, str]], steps: int = 150) -> pd.DataFrame:
    return pd.DataFrame(
        [{"regime": r, "lr": lr, "method": m, "late_trend": t, "max_steps": steps} for r, lr, m, t in rows]
    )


def test_contrast_cell_is_the_smallest_rate_where_kto_rises_and_kto_s_levels_off() -> None:
    table = cells([
        ("a", 1e-4, "kto", trend_rules.RISING), ("a", 1e-4, "kto_s", trend_rules.RISING),
        ("a", 3e-4, "kto", trend_rules.RISING), ("a", 3e-4, "kto_s", trend_rules.LEVELS_OFF),
        ("a", 9e-4, "kto", trend_rules.RISING), ("a", 9e-4, "kto_s", trend_rules.LEVELS_OFF),
        ("b", 2e-4, "kto", trend_rules.LEVELS_OFF), ("b", 2e-4, "kto_s", trend_rules.LEVELS_OFF),
    ])  # fmt: skip
    pick = trend_rules.contrast_cell(table)
    assert (pick["regime"], pick["lr"]) == ("a", 3e-4)
    assert len(trend_rules.contrast_cells(table)) == 2
    assert trend_rules.contrast_cell(table[table["lr"] != 3e-4])["lr"] == 9e-4
    assert trend_rules.contrast_cell(table[table["lr"] < 2e-4]) is None


def test_runaway_increments_are_per_step_rates_on_equal_thirds() -> None:
    steps = np.array([1, 5, 10, 15, 20, 25, 30, 35, 40], dtype=float)
    d_mid, d_last = analysis.runaway_increments(steps, 0.05 * steps)  # linear: equal rates
    assert d_mid == pytest.approx(d_last) == pytest.approx(0.05 * 40 / 3)
    # The raw differences (probe steps 15 and 25) would have made the last third 1.5 times the middle.
    assert analysis.runaway_increments(steps, np.sqrt(steps))[1] < analysis.runaway_increments(steps, np.sqrt(steps))[0]


# ------------------------------------------------------ whole-trajectory readings (ktos.study.readings.checkpoint_envel


def checkpoint_table(kto_s_shift: float = 0.0, kto_s_gain: float = 0.0, seeds: int = 6) -> pd.DataFrame:
    """KTO at lrs 1, 2, 4 (x 1e-4): KL = lr_factor * step / 50 and accuracy 0.6 + 0.1 * KL - 0.03 * KL^2.
    KTO-S is KTO at ``kto_s_shift`` times a smaller step (its KL scaled by 2^-shift: the same curve) plus
    ``kto_s_gain`` accuracy at every checkpoint. Validation and test halves equal the whole set plus noise."""
    rows = []
    rng = np.random.default_rng(0)
    for method in ("kto", "kto_s"):
        for factor in (1.0, 2.0, 4.0):
            for seed in range(seeds):
                for step in range(10, 151, 10):
                    kl = factor * step / 50 * (2**-kto_s_shift if method == "kto_s" else 1) * (1 + 0.02 * seed)
                    acc = 0.6 + 0.1 * kl - 0.03 * kl**2 + (kto_s_gain if method == "kto_s" else 0)
                    val, test = acc + 0.01 * rng.standard_normal(), acc + 0.01 * rng.standard_normal()
                    rows.append({
                        "regime": "r", "method": method, "lr": factor * 1e-4, "seed": seed, "step": step,
                        "status": "completed", "probe_kl": kl, "step_quality": acc, "step_quality_val": val,
                        "step_quality_test": test, "quality": acc, "quality_val": val, "quality_test": test,
                        "base_quality": 0.6, "base_quality_val": 0.6, "base_quality_test": 0.6,
                    })  # fmt: skip
    df = pd.DataFrame(rows)
    ends = df["step"] == 150
    df.loc[ends, ["step_quality", "step_quality_val", "step_quality_test"]] = math.nan  # the end: run-level columns
    return df


def test_a_smaller_step_traces_the_same_envelope_and_a_better_method_lies_above() -> None:
    same = checkpoint_envelope.envelope_table(
        checkpoint_envelope.checkpoints(checkpoint_table(kto_s_shift=1.0), "r"), n_boot=200
    )
    s = same[same["method"] == "kto_s"]
    assert (s["diff_low"] <= 0.011).all() and (s["diff_high"] >= -0.011).all()  # within one grid point's rounding
    better = checkpoint_envelope.envelope_table(
        checkpoint_envelope.checkpoints(checkpoint_table(kto_s_gain=0.05), "r"), n_boot=200
    )
    b = better[(better["method"] == "kto_s") & (better["kl_budget"] >= 1)]
    assert b["diff_vs_kto"].tolist() == pytest.approx([0.05] * len(b), abs=0.01)
    assert (b["diff_low"] > 0).all()
    low = better[(better["kl_budget"] == 0.25) & (better["method"] == "kto")].iloc[0]
    assert (low["lr"], low["step"]) == (1e-4, 10)  # the one checkpoint within 0.25 nats (mean KL 0.21)


def test_early_stopping_chooses_on_validation_and_reports_test() -> None:
    df = checkpoint_table(kto_s_gain=0.05)
    # Make one KTO checkpoint best on the test half only: the choice must not see it.
    leak = (df["method"] == "kto") & (df["lr"] == 1e-4) & (df["step"] == 10)
    df.loc[leak, "step_quality_test"] = 0.99
    table = checkpoint_envelope.early_stopping_table(checkpoint_envelope.checkpoints(df, "r"), n_boot=200).set_index(
        "method"
    )
    kto = df[df["method"] == "kto"].groupby(["lr", "step"])["step_quality_val"].mean().idxmax()
    assert (table.loc["kto", "lr"], table.loc["kto", "step"]) == kto
    assert table.loc["kto", "test_accuracy"] < 0.9
    assert table.loc["kto_s", "diff_vs_kto"] == pytest.approx(0.05, abs=0.02)
    assert table.loc["kto_s", "diff_low"] > 0 and table.loc["kto_s", "boot_diff_low"] > 0


def test_the_size_fit_finds_the_driver() -> None:
    rng = np.random.default_rng(1)
    rows = []
    for params in (1e5, 3e5, 1e6):
        for lr in (3e-5, 9e-5, 2.7e-4):
            for _ in range(6):
                u = lr * math.sqrt(params) * (1 + 0.1 * rng.standard_normal())  # the step grows with size
                rows.append({"method": "kto", "status": "completed", "params": params, "late_update_norm": u,
                             "final_probe_kl": 40 * u**1.5 * math.exp(0.05 * rng.standard_normal())})  # fmt: skip
    fit = scale.drivers(pd.DataFrame(rows)).set_index("term")
    assert fit.loc["log_update_norm", "coef"] == pytest.approx(1.5, abs=0.15)
    assert fit.loc["log_params", "low"] < 0 < fit.loc["log_params", "high"]
    assert "the step drives it" in bases_and_sizes.driver_sentence(fit.reset_index())


# ------------------------------------------------------------------------------- criteria that can fail


def test_a_collapsed_run_never_levels_off() -> None:
    """A flat KL whose task accuracy fell below half the base's is collapsed, not stable; the same KL with the
    accuracy kept levels off."""
    steps = np.arange(10.0, 160.0, 10.0)
    flat = 3.0 + 0.001 * np.sin(steps)
    assert trend_rules.run_trend(steps, flat, 0.1)["late_trend"] == trend_rules.LEVELS_OFF
    kept = trend_rules.run_trend(steps, flat, 0.1, quality=0.55, base_quality=0.6)
    assert kept["late_trend"] == trend_rules.LEVELS_OFF
    fell = trend_rules.run_trend(steps, flat, 0.1, quality=0.285, base_quality=0.6)
    assert fell["late_trend"] == trend_rules.COLLAPSED
    cell = trend_rules.cell_trend(pd.Series([0.01, 0.02, 0.0]), pd.Series([3.0, 3.1, 2.9]), 0.1, 0.076, 0.6)
    assert cell["late_trend"] == trend_rules.COLLAPSED
    assert not trend_rules.collapsed(math.nan, 0.6) and not trend_rules.collapsed(0.31, 0.6)


def test_no_committed_collapsed_run_levels_off() -> None:
    """Across every committed study's runs and cells, a run or cell below half its base's accuracy is collapsed."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "results/reference"
    checked = 0
    for table in [*root.glob("*/tables/runs.csv"), *root.glob("*/tables/cells.csv")]:
        df = pd.read_csv(table)
        fell = df["quality"] < trend_rules.COLLAPSE_SHARE * df["base_quality"]
        assert (df.loc[fell, "late_trend"] == trend_rules.COLLAPSED).all(), table
        assert not (df.loc[~fell, "late_trend"] == trend_rules.COLLAPSED).any(), table
        checked += int(fell.sum())
    assert checked > 0  # the 2.6M lr 2.7e-4 cells, among others


def test_a_prediction_the_null_passes_too_does_not_count() -> None:
    scale_cells = pd.DataFrame(
        {"method": ["kto"] * 2, "params": [2_649_344] * 2, "lr": [3e-5, 2.7e-4], "final_probe_kl": [6.0, 17.0],
         "n": [6, 6]}
    )  # fmt: skip
    predictions = pd.DataFrame(
        {"method": ["kto"] * 2, "size": ["2.6M"] * 2, "params": [2_649_344] * 2, "lr": [3e-5, 2.7e-4],
         "predicted_final_probe_kl": [5.0, 15.0], "low": [3.0, 14.0], "high": [9.0, 30.0],
         "null_final_probe_kl": [4.3, 8.8]}
    )  # fmt: skip
    check = scale.check_predictions(scale_cells, predictions).set_index("lr")
    assert check["holds"].all()
    assert check.loc[3e-5, "null_holds"] and not check.loc[3e-5, "counts"]  # the null lies inside [3, 9]
    assert not check.loc[2.7e-4, "null_holds"] and check.loc[2.7e-4, "counts"]  # 8.8 lies outside [14, 30]
    text = " ".join(bases_and_sizes.observed_sentences(check.reset_index()))
    assert "not tested here" in text and "the prediction counts" in text


def test_the_size_law_carries_the_largest_size_forward_as_its_null() -> None:
    rows = [
        {"method": "kto", "params": n, "lr": lr, "final_probe_kl": k * (n / 1e5) ** 0.4 * (lr / 1e-4) ** 0.5}
        for n in (1e5, 3e5, 1e6) for lr in (3e-5, 1e-4) for k in (0.9, 1.1)
    ]  # fmt: skip
    predictions = scale.size_predictions(pd.DataFrame(rows), sizes={"2.6M": 2_600_000}, lrs=(3e-5, 2.7e-4))
    at = predictions.set_index("lr")["null_final_probe_kl"]
    expected = np.mean([k * 10**0.4 * 0.3**0.5 for k in (0.9, 1.1)])
    assert at[3e-5] == pytest.approx(expected) and np.isnan(at[2.7e-4])  # 1e6 was not trained at 2.7e-4


def test_cluster_robust_intervals_take_the_base_as_the_unit() -> None:
    """Seeds that repeat their base's value add no information: the naive interval narrows with them, the
    cluster-robust one does not."""
    rng = np.random.default_rng(0)
    base_rows = [
        {"base": f"{n}_seed{b}", "params": n, "late_update_norm": u, "noise": rng.normal(0, 0.3)}
        for n in (1e5, 3e5, 1e6) for b in range(3) for u in (0.01, 0.02)
    ]  # fmt: skip

    def fit(seeds: int) -> pd.DataFrame:
        runs = pd.DataFrame([
            {**r, "seed": s, "status": "completed",
             "final_probe_kl": np.exp(0.6 * np.log(r["late_update_norm"]) + 0.15 * np.log(r["params"]) + r["noise"])}
            for r in base_rows for s in range(seeds)
        ])  # fmt: skip
        return scale.drivers(runs).set_index(["method", "term"]).loc[("kto", "log_params")]

    runs_method = {"method": "kto"}
    base_rows = [{**r, **runs_method} for r in base_rows]
    one, many = fit(1), fit(8)
    assert many["high"] - many["low"] < 0.5 * (one["high"] - one["low"])  # seeds counted as independent
    assert many["base_high"] - many["base_low"] == pytest.approx(one["base_high"] - one["base_low"], rel=0.2)
    assert many["n_bases"] == 9
