"""The study's analyses on synthetic data (fast: no training, no snakemake).

Run directories -> tidy table (ktos.study.readings.rundir), run names, the runaway rule, the stability criterion, the
paired statistics, the matched-KL comparison, the headline rule and the verdict of docs/study.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import trajectory_table
from scipy import stats as sps

from ktos import runnames
from ktos.study.readings import analysis, rundir, stats
from ktos.study.readings.analysis import Criteria
from ktos.study.report import verdict
from ktos.study.report.prose import headline
from ktos.study.report.prose.numbers import fmt as fmt_number

STUDY = Criteria()  # tau 0.1 nats, window step 20, margin 10%


# ------------------------------------------------------------------------------------------- run dirs


def write_run(path: Path, records: list[dict], info: dict | None) -> Path:
    path.mkdir(parents=True)
    (path / rundir.TRAJECTORY_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    if info is not None:
        (path / rundir.RUN_INFO_FILE).write_text(json.dumps(info))
    return path


def info(method: str, seed: int, status: str = "completed", **kw) -> dict:
    """A run_info.json as ktos.runs.run.train writes it."""
    return {
        "regime": "constant_s150_b0.2", "method": method, "use_kto_s": method == "kto_s", "beta": 0.2,
        "learning_rate": 1e-4, "seed": seed, "status": status, "diverged_at_step": None,
        "config": {"max_steps": 150, "learning_rate": 1e-4}, "versions": {}, "git_revision": None,
        "elapsed_s": 1.0, "quality": {"metric": "task_accuracy", "value": 0.5 + seed / 10, "n": 200},
        "base_quality": {"metric": "task_accuracy", "value": 0.45, "n": 200},
        "base": {"name": "0.09M_seed0", "name_or_path": "bases/0.09M_seed0", "sha256": "ab" * 32}, **kw,
    }  # fmt: skip


def record(step: int, kl: float, **kw) -> dict:
    """A trajectory.jsonl line as ktos.runs.trajectory.TrajectoryCallback writes it (TRL's keys)."""
    return {
        "step": step, "epoch": step / 10, "kl": kl, "loss": 0.5, "rewards/chosen": 0.1 * step,
        "rewards/rejected": -0.1 * step, "rewards/margins": 0.2 * step, "logps/chosen": -10.0,
        "logps/rejected": -12.0, "learning_rate": 1e-4, "grad_norm": 1.0, "elapsed_s": float(step), **kw,
    }  # fmt: skip


def test_extract_keeps_the_same_run_on_two_bases_apart(tmp_path: Path) -> None:
    """The same method, lr and seed from two bases are two runs; from one base twice, an error."""
    base = {"name": "0.09M_seed1", "name_or_path": "x", "sha256": None}
    one = write_run(tmp_path / "runs/0.09M_seed0/a", [record(1, 0.1)], info("kto", 0))
    two = write_run(tmp_path / "runs/0.09M_seed1/a", [record(1, 0.2)], info("kto", 0, base=base))
    df = rundir.extract([one, two], tmp_path / "kl.csv")
    assert df["base"].tolist() == ["0.09M_seed0", "0.09M_seed1"] and df["kl"].tolist() == [0.1, 0.2]
    again = write_run(tmp_path / "runs/again/a", [record(1, 0.3)], info("kto", 0))
    with pytest.raises(ValueError, match="are both"):
        rundir.extract([one, again], tmp_path / "kl2.csv")


def test_extract_and_read_table_round_trip(tmp_path: Path) -> None:
    kto_s = write_run(
        tmp_path / "runs" / "b",
        [
            record(1, 0.01, probe_kl=0.02, probe_kl_se=0.004, probe_kl_per_token=0.001),
            record(2, 0.02, step_quality=0.55),
        ],
        info("kto_s", 1, status="running", quality=None),
    )  # fmt: skip
    recs = [record(s, 0.1 * s) for s in (2, 1, 3)]
    del recs[0]["rewards/rejected"]  # a batch with no undesirable example
    kto = write_run(tmp_path / "runs" / "a", recs, info("kto", 0))
    out = tmp_path / "table" / "kl.csv"
    df = rundir.extract([kto_s, kto], out)

    back = rundir.read_table(out)
    assert list(back.columns) == list(rundir.COLUMNS)
    assert back[["method", "seed", "step"]].values.tolist() == [
        ["kto", 0, 1], ["kto", 0, 2], ["kto", 0, 3], ["kto_s", 1, 1], ["kto_s", 1, 2],
    ]  # fmt: skip
    assert (back["regime"] == "constant_s150_b0.2").all() and (back["base"] == "0.09M_seed0").all()
    assert (back["max_steps"] == 150).all()  # from run_info's config
    assert (back["base_quality"] == 0.45).all()  # from run_info's base_quality
    assert (back["lr"] == 1e-4).all() and (back["beta"] == 0.2).all()
    assert back["rewards_chosen"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.1, 0.2])
    assert np.isnan(back.loc[1, "rewards_rejected"])  # step 2 of kto: key missing
    assert back.loc[3, ["probe_kl", "probe_kl_se"]].tolist() == pytest.approx([0.02, 0.004])
    assert np.isnan(back.loc[4, "probe_kl"]) and back.loc[4, "step_quality"] == pytest.approx(0.55)
    assert back["status"].tolist() == ["completed"] * 3 + ["running"] * 2
    assert back.loc[0, "quality"] == pytest.approx(0.5) and back.loc[0, "quality_metric"] == "task_accuracy"
    assert back.loc[3:, "quality"].isna().all()
    pd.testing.assert_frame_equal(
        df.drop(columns="quality_metric"), back.drop(columns="quality_metric"), check_dtype=False
    )

    bad = tmp_path / "bad.csv"
    back.drop(columns="probe_kl_se").to_csv(bad, index=False)
    with pytest.raises(ValueError, match="probe_kl_se"):
        rundir.read_table(bad)


def test_run_without_run_info_is_read_from_its_name(tmp_path: Path) -> None:
    bare = write_run(tmp_path / "kto_s_lr1e-5_seed3", [record(1, 0.1)], None)
    (bare / rundir.TRAJECTORY_FILE).write_text((bare / rundir.TRAJECTORY_FILE).read_text() + '{"step": 2, "kl"')
    rows = rundir.read_run(bare)  # truncated last line: a run still writing
    assert len(rows) == 1 and list(rows.columns) == list(rundir.COLUMNS)
    assert rows.loc[0, "status"] == rundir.NO_RUN_INFO and rows.loc[0, "regime"] == rundir.DEFAULT_REGIME
    assert (rows.loc[0, "method"], rows.loc[0, "lr"], rows.loc[0, "seed"]) == ("kto_s", 1e-5, 3)
    assert np.isnan(rows.loc[0, "base_quality"]) and np.isnan(rows.loc[0, "max_steps"])

    unnamed = write_run(tmp_path / "some_run", [record(1, 0.1)], None)
    with pytest.raises(ValueError, match="not a run name"):
        rundir.read_run(unnamed)


def test_diverged_run_is_truncated_at_diverged_at_step(tmp_path: Path) -> None:
    div = write_run(
        tmp_path / "d", [record(s, 0.1 * s) for s in range(1, 8)], info("kto", 0, status="diverged", diverged_at_step=5)
    )
    rows = rundir.read_run(div)
    assert rows["step"].tolist() == [1, 2, 3, 4, 5] and (rows["status"] == "diverged").all()
    done = write_run(tmp_path / "c", [record(s, 0.1 * s) for s in range(1, 8)], info("kto", 0, diverged_at_step=5))
    assert rundir.read_run(done)["step"].max() == 7  # only a diverged run is cut


def test_extract_expands_parent_dirs_and_rejects_duplicate_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "a", [record(1, 0.1)], info("kto", 0))
    write_run(tmp_path / "runs" / "b", [record(1, 0.1)], info("kto_s", 0))
    write_run(tmp_path / "runs" / "c", [record(1, 0.1)], info("kto", 0, regime="sgd"))  # same run, other regime
    assert len(rundir.extract([tmp_path / "runs"], tmp_path / "t.csv")) == 3
    write_run(tmp_path / "runs" / "d", [record(1, 0.1)], info("kto", 0))
    with pytest.raises(ValueError, match="both regime=constant_s150_b0.2, base=0.09M_seed0, method=kto"):
        rundir.extract([tmp_path / "runs"], tmp_path / "t.csv")


# ------------------------------------------------------------------------------------------- run names


@pytest.mark.parametrize(("method", "lr", "seed", "name"), [
    ("kto_s", 1e-4, 3, "kto_s_lr0.0001_seed3"), ("kto", 1e-5, 0, "kto_lr1e-5_seed0"),
    ("kto", 3.16e-4, 12, "kto_lr0.000316_seed12"),
])  # fmt: skip
def test_run_names_round_trip(method: str, lr: float, seed: int, name: str) -> None:
    assert runnames.run_name(method, lr, seed) == name
    assert runnames.parse_run_name(name) == (method, lr, seed)


@pytest.mark.parametrize("name", ["dpo_lr0.0001_seed0", "kto_lr0.0001", "kto-s_lr1e-4_seed0", "ktos_lr1e-4_seed1"])
def test_unrecognised_run_names_are_errors(name: str) -> None:
    with pytest.raises(ValueError):
        runnames.parse_run_name(name)


# --------------------------------------------------------------------------------------------- runaway


PROBE_STEPS = np.array([1, *range(5, 61, 5)], dtype=float)  # step 1, every 5th, the last (T = 60)


@pytest.mark.parametrize(("kl", "away"), [
    (0.01 * PROBE_STEPS, True),  # linear: d_last = d_mid = 0.2 (up to rounding)
    (PROBE_STEPS / 80, True),  # linear, exact in binary: d_last == d_mid == 0.25
    (0.5 * (PROBE_STEPS / 60) ** 2, True),  # accelerating
    (0.2 * np.sqrt(PROBE_STEPS), False),  # levelling off: d_last 0.28 > tau but < d_mid 0.37
    (0.004 * PROBE_STEPS, False),  # linear, but only 0.08 nats over the last third
    (1e-5 * PROBE_STEPS**2, False),  # accelerating, but only 0.02 nats over the last third
])  # fmt: skip
def test_runaway_rule_on_hand_made_trajectories(kl: np.ndarray, away: bool) -> None:
    d_mid, d_last = analysis.runaway_increments(PROBE_STEPS, kl)
    k = dict(zip(PROBE_STEPS, kl, strict=True))
    assert (d_mid, d_last) == pytest.approx((k[40] - k[20], k[60] - k[40]))  # the steps nearest T/3, 2T/3
    assert analysis.runs_away(d_mid, d_last, STUDY.threshold) is away


def test_plan_note_trajectory_runs_away() -> None:
    steps, kl = np.array([1, 5, 10, 15, 20.0]), np.array([0.0, 0.039, 0.189, 0.472, 2.056])
    d_mid, d_last = analysis.runaway_increments(steps, kl)
    # steps 5 and 15 nearest 6.7 and 13.3: windows of 10 and 5 steps, each rate times T/3 = 20/3 steps
    assert (d_mid, d_last) == pytest.approx(((0.472 - 0.039) / 10 * 20 / 3, (2.056 - 0.472) / 5 * 20 / 3))
    assert analysis.runs_away(d_mid, d_last, STUDY.threshold)


def test_runaway_rule_edges() -> None:
    assert not analysis.runs_away(0.05, 0.1, 0.1)  # a rise of exactly tau is not more than tau
    assert analysis.runs_away(0.05, 0.1001, 0.1)
    assert analysis.runs_away(0.3, 0.3, 0.1) and not analysis.runs_away(0.31, 0.3, 0.1)
    assert analysis.runs_away(-0.5, 0.2, 0.1)  # falling, then rising fast
    assert not analysis.runs_away(math.nan, math.nan, 0.1)
    assert all(map(math.isnan, analysis.runaway_increments(np.array([1.0, 5.0]), np.array([0.0, 1.0]))))


def test_run_and_cell_summaries_on_the_synthetic_table() -> None:
    df = trajectory_table(lrs=(1e-4,), diverged=(("kto", 1e-4, 2), 30))
    runs = analysis.run_summary(df, STUDY).set_index(["method", "seed"])
    assert len(runs) == 6
    assert runs.loc["kto", "runaway"].tolist() == [True, True, True]  # seed 2 diverged: 50 nats at its step 30
    assert not runs.loc["kto_s", "runaway"].any()
    run = df[(df["method"] == "kto_s") & (df["seed"] == 1)].dropna(subset=["probe_kl"]).set_index("step")
    row = runs.loc[("kto_s", 1)]
    assert row["final_probe_kl"] == pytest.approx(run.loc[60, "probe_kl"])
    assert row["window_probe_kl"] == pytest.approx(run.loc[20, "probe_kl"])
    assert row["max_window_probe_kl"] == pytest.approx(run.loc[:20, "probe_kl"].max())
    assert (row["d_mid"], row["d_last"]) == pytest.approx(
        (run.loc[40, "probe_kl"] - run.loc[20, "probe_kl"], run.loc[60, "probe_kl"] - run.loc[40, "probe_kl"])
    )
    logged = df[(df["method"] == "kto_s") & (df["seed"] == 1)]["kl"]
    assert row["final_kl"] == pytest.approx(logged.tail(3).mean())
    assert row["window_quality"] == pytest.approx(0.615) and row["quality"] == pytest.approx(0.625)

    cells = analysis.cell_summary(df, analysis.run_summary(df, STUDY), STUDY).set_index("method")
    kto = cells.loc["kto"]
    assert kto["runaway"] and not cells.loc["kto_s", "runaway"]
    assert (kto["n"], kto["n_diverged"], kto["n_runaway_seeds"], kto["n_stable"]) == (2, 1, 2, 0)
    assert (cells.loc["kto_s", "n"], cells.loc["kto_s", "n_stable"]) == (3, 3)
    finals = [runs.loc[("kto", s), "final_probe_kl"] for s in (0, 1)]  # the diverged seed is not averaged
    assert kto["final_probe_kl"] == pytest.approx(np.mean(finals))
    assert kto["final_probe_kl_ci95"] == pytest.approx(sps.t.ppf(0.975, 1) * np.std(finals, ddof=1) / math.sqrt(2))
    mean_traj = (
        df[(df["method"] == "kto") & (df["seed"] < 2)].dropna(subset=["probe_kl"]).groupby("step")["probe_kl"].mean()
    )
    assert (kto["d_mid"], kto["d_last"]) == pytest.approx(
        (mean_traj[40] - mean_traj[20], mean_traj[60] - mean_traj[40])
    )


# ------------------------------------------------------------------------------------------- stability


def one_run(**kw) -> pd.DataFrame:
    """One stable KTO-S run (60 steps, probe every 5) to break one condition at a time."""
    return trajectory_table(methods=("kto_s",), seeds=(0,), **kw)


def stability(df: pd.DataFrame) -> pd.Series:
    return analysis.run_summary(df, STUDY).iloc[0][["below_threshold", "not_below_zero", "accuracy_kept", "stable"]]


def set_probe(df: pd.DataFrame, step: int, kl: float, se: float | None = None) -> pd.DataFrame:
    df = df.copy()
    df.loc[df["step"] == step, "probe_kl"] = kl
    if se is not None:
        df.loc[df["step"] == step, "probe_kl_se"] = se
    return df


def test_stable_run_meets_every_condition() -> None:
    assert stability(one_run()).tolist() == [True, True, True, True]


def test_crossing_the_threshold_in_the_window_is_unstable() -> None:
    assert stability(set_probe(one_run(), 15, 0.12)).tolist() == [False, True, True, False]
    assert stability(set_probe(one_run(), 20, 0.1)).tolist() == [False, True, True, False]  # K < tau, strictly
    assert stability(set_probe(one_run(), 20, 0.099))["stable"]
    assert stability(set_probe(one_run(), 25, 0.5))["stable"]  # after the window it does not count


def test_probe_kl_below_minus_two_se_is_unstable() -> None:
    assert stability(set_probe(one_run(), 10, -0.05, se=0.02)).tolist() == [True, False, True, False]
    assert stability(set_probe(one_run(), 10, -0.05, se=0.03))["stable"]  # within noise: -0.05 >= -0.06
    assert stability(set_probe(one_run(), 10, -0.05, se=0.025))["stable"]  # exactly -2 SE is kept
    assert stability(set_probe(one_run(), 40, -0.5, se=0.01))["stable"]  # after the window


@pytest.mark.parametrize(("column", "value", "kept"), [
    ("quality", 0.53, False),  # floor: 0.6 - 2 sqrt(0.6 * 0.4 / 200) = 0.5307
    ("quality", 0.535, True),
    ("step_quality", 0.53, False),  # at step 20
    ("step_quality", 0.535, True),
])  # fmt: skip
def test_accuracy_below_base_beyond_noise_is_unstable(column: str, value: float, kept: bool) -> None:
    df = one_run()
    df.loc[df[column].notna(), column] = value
    result = stability(df)
    assert result.tolist() == [True, True, kept, kept]


def test_without_a_task_metric_accuracy_is_not_a_condition() -> None:
    df = one_run(quality=False)
    assert stability(df).tolist() == [True, True, True, True]


def test_diverged_run_is_never_stable() -> None:
    df = one_run(diverged=(("kto_s", 1e-4, 0), 40))  # blows up after the window, its window is clean
    result = analysis.run_summary(df, STUDY).iloc[0]
    assert result["status"] == "diverged"
    assert result["below_threshold"] and result["not_below_zero"] and result["accuracy_kept"]
    assert not result["stable"]


# ---------------------------------------------------------------------------------------------- paired


def test_t_quantile_matches_scipy() -> None:
    for dof in (1, 2, 4, 9, 40, 1000):
        assert stats.t_quantile(dof) == pytest.approx(sps.t.ppf(0.975, dof), rel=1e-12)
    assert stats.t_quantile(5, 0.9) == pytest.approx(sps.t.ppf(0.95, 5), rel=1e-12)
    assert stats.t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    with pytest.raises(ValueError):
        stats.t_quantile(0)
    mean, std, half, n = stats.mean_spread([1.0, math.nan, 3.0])
    assert (mean, std, n) == pytest.approx((2.0, math.sqrt(2), 2))
    assert half == pytest.approx(sps.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2))


def test_paired_exact_numbers() -> None:
    # seeds 0-3 and 5 in both (5 a tie), 7 only in a, 4 only in b, 6 NaN in b: five pairs
    a = pd.Series({0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 5: 2.0, 6: 1.0, 7: 9.0})
    b = pd.Series({3: 3.9, 1: 1.8, 0: 0.5, 2: 2.1, 5: 2.0, 6: math.nan, 4: 7.0})
    p = stats.paired(a, b)
    xa, xb = np.array([1.0, 2.0, 3.0, 4.0, 2.0]), np.array([0.5, 1.8, 2.1, 3.9, 2.0])
    d = xb - xa  # -0.5, -0.2, -0.9, -0.1, 0
    assert p.n == 5
    assert (p.mean_a, p.mean_b, p.diff) == pytest.approx((2.4, 2.06, -0.34))
    ci = sps.ttest_rel(xb, xa).confidence_interval(0.95)
    assert (p.diff_low, p.diff_high) == pytest.approx((ci.low, ci.high))
    h = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (p.diff_low, p.diff_high) == pytest.approx((-0.34 - h, -0.34 + h))
    assert (p.rel, p.rel_low, p.rel_high) == pytest.approx((-0.34 / 2.4, ci.low / 2.4, ci.high / 2.4))
    assert (p.ratio_median, p.ratio_min, p.ratio_max) == pytest.approx((0.9, 0.5, 1.0))  # 0.5 .7 .9 .975 1
    assert (p.n_lower, p.n_higher) == (4, 0)  # the tie is dropped from the sign test
    assert p.sign_p == pytest.approx(sps.binomtest(4, 4, 0.5).pvalue) and p.sign_p == pytest.approx(0.125)
    mde = (sps.t.ppf(0.975, 4) + sps.t.ppf(0.8, 4)) * d.std(ddof=1) / math.sqrt(5)
    assert (p.mde, p.mde_rel) == pytest.approx((mde, mde / 2.4))

    mixed = stats.paired(pd.Series([1.0, 2.0, 3.0, 4.0]), pd.Series([0.5, 2.5, 2.0, 3.0]))
    assert (mixed.n_lower, mixed.n_higher) == (3, 1)
    assert mixed.sign_p == pytest.approx(sps.binomtest(3, 4, 0.5).pvalue)  # two-sided: 0.625
    assert stats.paired(pd.Series([1.0]), pd.Series([2.0], index=[1])).n == 0


@pytest.mark.parametrize(("d", "call"), [
    ([-0.5, -0.48, -0.52, -0.49], "lower"),
    ([0.5, 0.48, 0.52, 0.49], "higher"),
    ([0.01, -0.01, 0.02, -0.02], "equivalent"),  # KTO's mean 10: relative interval within +-0.4%
    ([1.0, -1.0, 2.0, -2.0], "undecided"),  # interval holds 0 and reaches past +-10%
    ([0.5], "too few seeds"),
])  # fmt: skip
def test_paired_call(d: list[float], call: str) -> None:
    a = pd.Series([9.0, 10.0, 11.0, 10.0][: len(d)])
    result = stats.paired(a, a + np.array(d))
    assert result.call(0.1) == call
    if call == "equivalent":
        assert result.call(0.001) == "undecided"  # the same data at a tighter margin


def test_paired_table_pairs_runs_by_seed() -> None:
    df = trajectory_table(seeds=(0, 1, 2, 3))
    runs = analysis.run_summary(df, STUDY)
    runs = runs.sample(frac=1, random_state=3)  # row order must not matter
    runs = runs[~((runs["method"] == "kto_s") & (runs["seed"] == 2))]  # KTO-S lacks seed 2
    table = analysis.paired_table(runs, STUDY)
    assert list(table.columns) == list(analysis.PAIRED_COLUMNS)
    phase = {"phase_probe_kl", "phase_quality"}  # only with a runaway phase (analysis.phase_end)
    no_update_norm = {"late_update_norm"}  # the synthetic table logs no update norm
    assert set(table["metric"]) == set(analysis.PAIRED_METRICS) - phase - no_update_norm
    with_phase = analysis.paired_table(analysis.run_summary(df, Criteria(phase_end=20)), STUDY)
    assert set(with_phase["metric"]) == set(analysis.PAIRED_METRICS) - no_update_norm
    df["update_norm"] = 0.01 * df["lr"] / 1e-4 * (1 + (df["method"] == "kto"))
    logged = analysis.paired_table(analysis.run_summary(df, STUDY), STUDY).set_index("metric")
    assert logged.loc["late_update_norm", "diff"] == pytest.approx(-0.01)
    at_20 = df[(df["step"] == 20)].set_index(["method", "seed"])["probe_kl"]
    row = with_phase[with_phase["metric"] == "phase_probe_kl"].iloc[0]
    assert row["diff"] == pytest.approx(np.mean([at_20[("kto_s", s)] - at_20[("kto", s)] for s in (0, 1, 2, 3)]))
    kl = table[table["metric"] == "final_probe_kl"].iloc[0]
    assert kl["n"] == 3
    by = runs.set_index(["method", "seed"])["final_probe_kl"]
    d = [by[("kto_s", s)] - by[("kto", s)] for s in (0, 1, 3)]
    assert kl["diff"] == pytest.approx(np.mean(d))
    assert kl["mean_a"] == pytest.approx(np.mean([by[("kto", s)] for s in (0, 1, 3)]))
    assert kl["call"] == "lower" and kl["n_lower"] == 3
    quality = table[table["metric"] == "quality"].iloc[0]
    assert quality["diff"] == pytest.approx(0.04) and quality["call"] == "higher"


def test_paired_table_leaves_out_diverged_runs_and_single_method_cells() -> None:
    df = trajectory_table(lrs=(1e-4, 3e-4), diverged=(("kto", 1e-4, 0), 30))
    df = df[~((df["method"] == "kto_s") & (df["lr"] == 3e-4))]
    table = analysis.paired_table(analysis.run_summary(df, STUDY), STUDY)
    assert set(table["lr"]) == {1e-4}
    assert (table["n"] == 2).all()


# ----------------------------------------------------------------------------------------- matched KL

GRID = np.geomspace(1e-6, 1e-4, 8)  # KTO's learning rates
X = 2e-5  # KTO-S's learning rate; X / 2 lies between two grid points
JITTER = (0.01, -0.01, 0.02, -0.02, 0.005, -0.005)  # KTO-S's accuracy about its mean, per seed


def kto_kl(lr: float, seed: int) -> float:
    return 0.3 * math.log(lr / 1e-6) + 0.02 * (seed - 2.5)  # linear in log lr


def kto_acc(lr: float, seed: int) -> float:
    return 0.7 - 0.02 * math.log(lr / 1e-6) + 0.004 * (seed - 2.5)


def grid_runs(bonus: float = 0.0, kto_s_lr: float = X, kl_of: float | None = None) -> pd.DataFrame:
    """KTO on :data:`GRID`; KTO-S at ``kto_s_lr`` with, per seed, KTO's final probe KL at ``kl_of`` (default
    ``X / 2``) and KTO's accuracy there plus ``bonus`` (and a zero-mean jitter)."""
    rows = []
    for seed in range(6):
        for lr in GRID:
            rows.append({"method": "kto", "lr": lr, "final_probe_kl": kto_kl(lr, seed), "quality": kto_acc(lr, seed),
                         "seed": seed})  # fmt: skip
        at = kl_of or X / 2
        rows.append({"method": "kto_s", "lr": kto_s_lr, "final_probe_kl": kto_kl(at, seed),
                     "quality": kto_acc(at, seed) + bonus + JITTER[seed], "seed": seed})  # fmt: skip
    return pd.DataFrame(rows).assign(regime="main", status="completed")


def test_matched_kl_finds_kto_at_the_smaller_step() -> None:
    table = analysis.matched_kl(grid_runs(), n_boot=200)
    assert list(table.columns) == list(analysis.MATCHED_COLUMNS) and len(table) == 1
    row = table.iloc[0]
    assert row["lr_star"] == pytest.approx(X / 2, rel=1e-9)  # interpolated in log lr
    assert row["kto_quality_at_lr_star"] == pytest.approx(np.mean([kto_acc(X / 2, s) for s in range(6)]))
    assert row["quality_diff"] == pytest.approx(0, abs=1e-12)
    assert row["diff_low"] < 0 < row["diff_high"]
    assert 0.01 < row["diff_high"] - row["diff_low"] < 0.05  # KTO-S's seed jitter, resampled with replacement
    assert (row["n_boot_valid"], row["n_seeds"]) == (200, 6)
    assert "no different from KTO run at that smaller step" in headline.claim_not_learning_rate(table)


def test_matched_kl_interval_above_zero_when_kto_s_is_better() -> None:
    table = analysis.matched_kl(grid_runs(bonus=0.05), n_boot=200)
    row = table.iloc[0]
    assert row["lr_star"] == pytest.approx(X / 2, rel=1e-9)
    assert row["quality_diff"] == pytest.approx(0.05)
    assert 0 < row["diff_low"] < 0.05 < row["diff_high"]
    assert "better than KTO at any step size on the grid" in headline.claim_not_learning_rate(table)


def test_matched_kl_outside_the_grid_and_too_few_learning_rates() -> None:
    row = analysis.matched_kl(grid_runs(kl_of=1e-7), n_boot=50).iloc[0]  # below anything KTO reaches
    assert math.isnan(row["lr_star"]) and math.isnan(row["quality_diff"]) and math.isnan(row["diff_low"])
    few = grid_runs()
    few = few[(few["method"] == "kto_s") | few["lr"].isin(GRID[:2])]
    assert analysis.matched_kl(few, n_boot=50).empty


# ------------------------------------------------------------------------------------------- headline


def cells(*specs: tuple[str, float, bool], method: str = "kto") -> pd.DataFrame:
    """Cell rows from ``(regime, lr, runaway)``; beta and length read from regime-search names."""
    rows = []
    for regime, lr, away in specs:
        _, s, b = regime.split("_")
        rows.append({"regime": regime, "method": method, "lr": lr, "beta": float(b[1:]), "max_steps": int(s[1:]),
                     "runaway": away})  # fmt: skip
    return pd.DataFrame(rows)


def test_headline_cell_smallest_runaway_lr_at_beta_0_2() -> None:
    table = pd.concat([
        cells(("constant_s150_b0.2", 1e-5, False), ("constant_s150_b0.2", 3e-5, True),
              ("constant_s150_b0.2", 1e-4, True), ("cosine_s150_b0.2", 1e-4, True), ("linear_s150_b0.2", 3e-4, True)),
        cells(("constant_s40_b0.2", 1e-6, True), ("constant_s150_b0.5", 1e-6, True)),  # other length, other beta
        cells(("constant_s150_b0.2", 1e-6, True), method="kto_s"),  # only KTO's cells count
    ])  # fmt: skip
    pick = analysis.headline_cell(table, beta=0.2, steps=150)
    assert (pick["regime"], pick["lr"]) == ("constant_s150_b0.2", 3e-5)
    assert "rank" not in pick.index


@pytest.mark.parametrize(("regimes", "expected"), [
    (("cosine_s150_b0.2", "linear_s150_b0.2"), "linear_s150_b0.2"),  # not alphabetical
    (("cosine_s150_b0.2", "constant_s150_b0.2", "linear_s150_b0.2"), "constant_s150_b0.2"),
])  # fmt: skip
def test_headline_cell_ties_go_constant_linear_cosine(regimes: tuple[str, ...], expected: str) -> None:
    table = cells(*[(r, 1e-4, True) for r in regimes], ("cosine_s150_b0.2", 3e-4, True))
    assert analysis.headline_cell(table, beta=0.2, steps=150)["regime"] == expected


def test_headline_cell_falls_back_to_the_nearest_beta() -> None:
    table = cells(("constant_s150_b0.2", 1e-4, False), ("constant_s150_b0.5", 1e-5, True),
                  ("constant_s150_b0.1", 3e-4, True), ("constant_s150_b1.0", 1e-6, True))  # fmt: skip
    pick = analysis.headline_cell(table, beta=0.2, steps=150)
    assert (pick["regime"], pick["beta"], pick["lr"]) == ("constant_s150_b0.1", 0.1, 3e-4)


def test_headline_cell_none_when_nothing_runs_away() -> None:
    table = cells(("constant_s150_b0.2", 1e-4, False), ("constant_s40_b0.2", 1e-4, True))
    assert analysis.headline_cell(table, beta=0.2, steps=150) is None


# ---------------------------------------------------------------------------------------------- verdict

TABLE_FILES = [
    "runs.csv", "cells.csv", "paired.csv", "matched_kl.csv", "checkpoints.csv", "kl_ratio.csv", "envelope.csv",
    "early_stopping.csv", "scale.csv", "drivers.csv", "size_fit.csv", "size_predictions.csv", "verdict.md",
]  # fmt: skip


def test_write_tables_files_and_verdict_when_kto_s_is_lower(tmp_path: Path) -> None:
    csv = tmp_path / "kl.csv"
    df = trajectory_table(lrs=(1e-4, 3e-4))
    df.to_csv(csv, index=False)
    paths = verdict.write_tables(csv, tmp_path / "tables", regime="main", lr=1e-4, checkpoints=(5, 10, 15, 20))
    assert sorted(p.name for p in paths) == sorted(TABLE_FILES)
    assert all(p.parent == tmp_path / "tables" and p.stat().st_size > 0 for p in paths)

    runs = pd.read_csv(tmp_path / "tables" / "runs.csv")
    assert len(runs) == 12 and (runs["stable"] == (runs["method"] == "kto_s")).all()
    checkpoints = pd.read_csv(tmp_path / "tables" / "checkpoints.csv")
    at20 = df[(df["method"] == "kto") & (df["lr"] == 1e-4) & (df["step"] == 20)]["probe_kl"]
    hit = checkpoints[(checkpoints["method"] == "kto") & (checkpoints["lr"] == 1e-4) & (checkpoints["step"] == 20)]
    assert hit["probe_kl_mean"].item() == pytest.approx(at20.mean())
    ratio = pd.read_csv(tmp_path / "tables" / "kl_ratio.csv")
    assert ratio["median_ratio"].iloc[-1] < ratio.loc[ratio["step"] == 20, "median_ratio"].item()  # brake tightens

    text = (tmp_path / "tables" / "verdict.md").read_text()
    finals = df[(df["lr"] == 1e-4) & (df["step"] == 60)].groupby("method")["probe_kl"].mean()
    fmt = fmt_number
    assert f"probe KL at the last step: KTO-S {fmt(finals['kto_s'])} against KTO {fmt(finals['kto'])} nats" in text
    assert "of KTO's mean); per-seed ratio KTO-S/KTO median" in text
    assert "KTO-S lower in 3 of 3 seeds (sign test p = 0.25): KTO-S is lower." in text
    assert "In regime main (β 0.2, 60 steps) at lr 0.0001, KTO's mean probe KL runs away" in text
    assert "Stable (probe KL below 0.1 nats through step 20" in text
    assert "KTO-S 3 of 3; KTO 0 of 3 (3 crossed 0.1 nats)" in text
    assert "it holds here" in text

    verdict.write_tables(csv, tmp_path / "other", regime="main", lr=3e-4)
    assert "at lr 0.0003, KTO's mean probe KL runs away" in (tmp_path / "other" / "verdict.md").read_text()


def test_verdict_when_kto_s_is_not_lower(tmp_path: Path) -> None:
    csv = tmp_path / "kl.csv"
    trajectory_table(kto_kl=0.03, kto_s_kl=0.06).to_csv(csv, index=False)  # KTO-S about twice KTO's KL
    verdict.write_tables(csv, tmp_path / "tables")
    text = (tmp_path / "tables" / "verdict.md").read_text()
    assert "KTO's mean probe KL does not run away" in text
    assert "KTO-S lower in 0 of 3 seeds (sign test p = 0.25): KTO-S is higher." in text
    assert "KTO-S is lower" not in text


def test_verdict_on_a_kto_only_regime_search(tmp_path: Path) -> None:
    csv = tmp_path / "kl.csv"
    regimes = ("constant_s150_b0.2", "cosine_s150_b0.2", "constant_s40_b0.2", "linear_s150_b0.5")
    df = trajectory_table(regimes=regimes, methods=("kto",), lrs=(1e-5, 1e-4), seeds=(0, 1))
    df.to_csv(csv, index=False)
    paths = verdict.write_tables(csv, tmp_path / "tables")
    assert sorted(p.name for p in paths) == sorted(TABLE_FILES)
    text = (tmp_path / "tables" / "verdict.md").read_text()
    cell_table = pd.read_csv(tmp_path / "tables" / "cells.csv")
    away = cell_table[cell_table["runaway"]]
    # KTO's final probe KL is 1.5 (lr / 1e-4) (0.2 / beta): it runs away at lr 1e-4 (final >= 0.6),
    # not at 1e-5 (<= 0.15)
    assert set(away["lr"]) == {1e-4} and len(away) == 4
    assert "KTO's mean probe KL runs away (docs/study.md) in 4 of 8 cells" in text
    assert "At 40 steps: 1 of 2. At 150 steps: 3 of 6." in text
    pick = cell_table[(cell_table["regime"] == "constant_s150_b0.2") & (cell_table["lr"] == 1e-4)].iloc[0]
    assert (
        f"The headline rule picks constant_s150_b0.2 at lr 0.0001: final probe KL "
        f"{fmt_number(pick['final_probe_kl'])} nats" in text
    )
    assert "KTO-S" not in text

    calm = tmp_path / "calm.csv"
    trajectory_table(regimes=regimes, methods=("kto",), lrs=(1e-5,), seeds=(0,)).to_csv(calm, index=False)
    verdict.write_tables(calm, tmp_path / "calm")
    assert "the rule picks no 150-step headline cell" in (tmp_path / "calm" / "verdict.md").read_text()


def test_the_headline_rules_length_and_beta_come_from_the_criteria(tmp_path: Path) -> None:
    csv = tmp_path / "kl.csv"
    regimes = ("constant_s150_b0.2", "constant_s40_b0.2", "constant_s40_b0.5")
    trajectory_table(regimes=regimes, methods=("kto",), lrs=(1e-5, 1e-4), seeds=(0, 1)).to_csv(csv, index=False)
    verdict.write_tables(csv, tmp_path / "at40", search_steps=40, beta=0.5)
    text = (tmp_path / "at40" / "verdict.md").read_text()
    assert "The headline rule picks constant_s40_b0.5 at lr 0.0001" in text
    assert "(2 seeds a cell)" in text
    verdict.write_tables(csv, tmp_path / "default")
    assert (
        "The headline rule picks constant_s150_b0.2 at lr 0.0001" in (tmp_path / "default" / "verdict.md").read_text()
    )


def test_mechanism_arms_come_from_the_config(tmp_path: Path) -> None:
    from ktos.cli import main

    csv = tmp_path / "kl.csv"
    trajectory_table(regimes=("main", "noclip"), lrs=(1e-4,), seeds=(0, 1, 2)).to_csv(csv, index=False)
    assert main(["tables", "--table", str(csv), "--output", str(tmp_path / "plain"), "--regime", "main"]) == 0
    assert "Mechanism arm" not in (tmp_path / "plain" / "verdict.md").read_text()
    argv = ["tables", "--table", str(csv), "--output", str(tmp_path / "arms"), "--regime", "main"]
    assert main([*argv, "--arms", "noclip=gradient clipping off", "absent=not in the table"]) == 0
    text = (tmp_path / "arms" / "verdict.md").read_text()
    assert "Mechanism arm, gradient clipping off (lr 0.0001): probe KL at the last step" in text
    assert "not in the table" not in text
    with pytest.raises(SystemExit):
        main([*argv, "--arms", "noclip"])


def test_the_policy_kl_enters_the_tables_only_where_measured() -> None:
    """Runs that measured the policy KL get its final and window values, pooled over bases and paired; tables
    from before it keep their columns."""
    from ktos.study.readings.base_factor import pooled_paired
    from ktos.study.readings.tables import checkpoint_table

    df = trajectory_table()
    assert "final_policy_kl" not in analysis.run_summary(df)
    assert "policy_kl_mean" not in checkpoint_table(df, (10, 20))
    measured = df.assign(policy_kl=np.where(df["step"] % 10 == 0, df["step"] / 100 * (df["method"] == "kto"), np.nan))
    runs = analysis.run_summary(measured, analysis.Criteria(window=20))
    kto = runs[runs["method"] == "kto"]
    assert (kto["final_policy_kl"] == 0.6).all() and (kto["window_policy_kl"] == 0.2).all()
    at = checkpoint_table(measured, (10, 20)).set_index(["method", "step"])
    assert at.loc[("kto", 20), "policy_kl_mean"] == pytest.approx(0.2)
    pairs = pooled_paired(pd.concat([runs.assign(base="b0"), runs.assign(base="b1")]))
    assert {"final_policy_kl", "window_policy_kl"} <= set(pairs["metric"])
