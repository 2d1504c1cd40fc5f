"""Run directories -> tidy table, checkpoint tables, stability map, frontier and verdict (synthetic data, fast)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import trajectory_table as make_table

from ktos import rundir, runnames, stats, tables, verdict

THRESHOLD = 0.1


def write_run(path: Path, records: list[dict], info: dict | None) -> Path:
    path.mkdir(parents=True)
    (path / "trajectory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if info is not None:
        (path / "run_info.json").write_text(json.dumps(info))
    return path


def info(method: str, seed: int, status: str = "completed", **kw) -> dict:
    return {
        "method": method, "use_kto_s": method == "kto_s", "beta": 0.2, "learning_rate": 5e-6, "seed": seed,
        "status": status, "diverged_at_step": None, "config": {}, "versions": {}, "git_revision": None,
        "elapsed_s": 1.0, "quality": {"metric": "task_accuracy", "value": 0.5 + seed / 10, "n": 200}, **kw,
    }  # fmt: skip


def record(step: int, kl: float, **kw) -> dict:
    return {
        "step": step, "epoch": step / 10, "kl": kl, "loss": 0.5, "rewards/chosen": 0.1 * step,
        "rewards/rejected": -0.1 * step, "rewards/margins": 0.2 * step, "logps/chosen": -10.0,
        "logps/rejected": -12.0, "learning_rate": 5e-6, "grad_norm": 1.0, "elapsed_s": float(step), **kw,
    }  # fmt: skip


# --------------------------------------------------------------------------------------------- reading


def test_extract_two_run_dirs(tmp_path: Path) -> None:
    kto_s = write_run(
        tmp_path / "runs" / "b",
        [record(1, 0.01, probe_kl=0.02, probe_kl_per_token=0.001), record(2, 0.02)],
        info("kto_s", 1, status="running", quality=None),
    )
    recs = [record(s, 0.1 * s) for s in (2, 1, 3)]
    del recs[0]["rewards/rejected"]  # a batch with no undesirable example
    kto = write_run(tmp_path / "runs" / "a", recs, info("kto", 0))
    out = tmp_path / "table" / "kl.csv"
    df = rundir.extract([kto_s, kto], out)

    assert out.is_file()
    back = rundir.read_table(out)
    assert list(back.columns) == list(rundir.COLUMNS)
    assert len(back) == 5
    assert back[["method", "seed", "step"]].values.tolist() == [
        ["kto", 0, 1], ["kto", 0, 2], ["kto", 0, 3], ["kto_s", 1, 1], ["kto_s", 1, 2],
    ]  # fmt: skip
    assert (back["lr"] == 5e-6).all() and (back["beta"] == 0.2).all()
    assert back["rewards_chosen"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.1, 0.2])
    assert np.isnan(back.loc[1, "rewards_rejected"])  # step 2 of kto: key missing
    assert back.loc[3, "probe_kl"] == pytest.approx(0.02) and np.isnan(back.loc[4, "probe_kl"])
    assert back["status"].tolist() == ["completed"] * 3 + ["running"] * 2
    assert back.loc[0, "quality"] == pytest.approx(0.5) and back.loc[0, "quality_metric"] == "task_accuracy"
    assert back.loc[3:, "quality"].isna().all()
    numeric = [c for c in rundir.COLUMNS if c not in ("method", "status", "quality_metric")]
    pd.testing.assert_frame_equal(df[numeric], back[numeric], check_dtype=False)


def test_extract_expands_parent_dir_and_rejects_duplicates(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "a", [record(1, 0.1)], info("kto", 0))
    write_run(tmp_path / "runs" / "b", [record(1, 0.1)], info("kto_s", 0))
    assert len(rundir.extract([tmp_path / "runs"], tmp_path / "t.csv")) == 2
    write_run(tmp_path / "runs" / "c", [record(1, 0.1)], info("kto", 0))
    with pytest.raises(ValueError, match="both method=kto"):
        rundir.extract([tmp_path / "runs"], tmp_path / "t.csv")


def test_read_run_without_info_or_with_divergence(tmp_path: Path) -> None:
    bare = write_run(tmp_path / "kto_s_lr1e-05_seed3", [record(1, 0.1)], None)
    (bare / "trajectory.jsonl").write_text((bare / "trajectory.jsonl").read_text() + '{"step": 2, "kl"')
    rows = rundir.read_run(bare)  # truncated last line: a run still writing
    assert len(rows) == 1 and rows.loc[0, "status"] == rundir.NO_RUN_INFO
    assert (rows.loc[0, "method"], rows.loc[0, "lr"], rows.loc[0, "seed"]) == ("kto_s", 1e-5, 3)

    div = write_run(
        tmp_path / "d",
        [record(s, 0.1 * s) for s in range(1, 8)],
        info("kto", 0, status="diverged", diverged_at_step=5),
    )
    rows = rundir.read_run(div)
    assert rows["step"].max() == 5 and (rows["status"] == "diverged").all()


# ---------------------------------------------------------------------------------------------- tables


def test_checkpoint_table_equals_table_values() -> None:
    df = make_table()
    table = tables.checkpoint_table(df, steps=(5, 10, 15, 20), threshold=THRESHOLD)
    runs = table[table["row"] == "run"]
    assert len(runs) == 6
    for r in runs.itertuples():
        run = df[(df["method"] == r.method) & (df["seed"] == r.seed)].set_index("step")
        for s in (5, 10, 15, 20):
            assert getattr(r, f"kl_step{s}") == pytest.approx(run.loc[s, "kl"])
        assert r.max_kl == pytest.approx(run.loc[:20, "kl"].max())
        assert r.stability == ("pass" if r.method == "kto_s" else "fail")
    for method in runnames.METHODS:
        summ = table[(table["method"] == method) & (table["row"] != "run")].set_index("row")
        at20 = df[(df["method"] == method) & (df["step"] == 20)]["kl"]
        assert summ.loc["mean", "kl_step20"] == pytest.approx(at20.mean())
        assert summ.loc["std", "kl_step20"] == pytest.approx(at20.std(ddof=1))
        assert summ.loc["ci95", "kl_step20"] == pytest.approx(4.302653 * at20.std(ddof=1) / math.sqrt(3))
        assert summ.loc["n", "kl_step20"] == 3
    assert (
        table.loc[(table["row"] == "mean") & (table["method"] == "kto_s"), "stability"].item() == "3/3 pass"
    )


def test_checkpoint_table_short_run_and_diverged_run() -> None:
    df = make_table(diverged=(("kto", 5e-6, 2), 12))
    df = df[~((df["method"] == "kto_s") & (df["seed"] == 0) & (df["step"] > 12))]  # stopped early
    table = tables.checkpoint_table(df, steps=(5, 10, 15, 20), threshold=THRESHOLD)
    short = table[(table["row"] == "run") & (table["method"] == "kto_s") & (table["seed"] == 0)].iloc[0]
    assert math.isnan(short["kl_step15"]) and short["window_end"] == 12
    bad = table[(table["row"] == "run") & (table["method"] == "kto") & (table["seed"] == 2)].iloc[0]
    assert bad["stability"] == "diverged"
    mean = table[(table["row"] == "mean") & (table["method"] == "kto")].iloc[0]
    ok = df[(df["method"] == "kto") & (df["seed"] < 2) & (df["step"] == 10)]["kl"]
    assert mean["kl_step10"] == pytest.approx(ok.mean())  # the diverged seed is not averaged
    assert mean["stability"] == "0/3 pass, 1 diverged"
    md = tables.checkpoint_markdown(table, threshold=THRESHOLD)
    assert "| KTO | 5e-6 | 2 |" in md and "diverged" in md and "**KTO-S**" in md


def test_stability_map_and_frontier() -> None:
    df = make_table(lrs=(1e-6, 5e-6), diverged=(("kto", 1e-6, 1), 8))
    smap = tables.stability_map(df, first_n_steps=10).set_index(["method", "lr"])
    row = smap.loc[("kto", 5e-6)]
    per_seed = [df[(df["method"] == "kto") & (df["lr"] == 5e-6) & (df["seed"] == s) & (df["step"] <= 10)]["kl"].max()
                for s in (0, 1, 2)]  # fmt: skip
    assert row["max_kl_mean"] == pytest.approx(np.mean(per_seed))
    assert (row["max_kl_min"], row["max_kl_max"]) == pytest.approx((min(per_seed), max(per_seed)))
    assert smap.loc[("kto", 1e-6), "n_diverged"] == 1 and smap.loc[("kto", 1e-6), "n_runs"] == 3

    front = tables.frontier(df).set_index(["method", "lr", "seed"])
    run = df[(df["method"] == "kto_s") & (df["lr"] == 5e-6) & (df["seed"] == 0)]
    assert front.loc[("kto_s", 5e-6, 0), "final_kl"] == pytest.approx(run["kl"].tail(3).mean())
    assert front.loc[("kto_s", 5e-6, 0), "final_probe_kl"] == pytest.approx(run["probe_kl"].dropna().iat[-1])
    assert front.loc[("kto_s", 5e-6, 0), "quality"] == pytest.approx(0.62)
    assert {"final_kl", "final_probe_kl", "quality"} <= set(front.columns)


def test_default_lr_and_t_quantiles() -> None:
    df = make_table(lrs=(1e-6, 5e-6, 2e-5))
    assert tables.default_lr(df) == 5e-6  # tie between all three: the median
    df = df[~((df["lr"] == 5e-6) & (df["seed"] == 2))]
    assert tables.default_lr(df) == 1e-6  # 1e-6 and 2e-5 tied with the most runs: lower median
    assert tables.default_lr(df, 2e-5) == 2e-5
    with pytest.raises(ValueError, match="not in the table"):
        tables.default_lr(df, 3e-4)
    assert stats.t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    assert stats.t_quantile(40) == pytest.approx(2.0211, abs=1e-3)
    assert stats.t_quantile(1000) == pytest.approx(1.9623, abs=1e-3)
    mean, std, half, n = stats.mean_spread([1.0, math.nan])
    assert (mean, n) == (1.0, 1) and math.isnan(std) and math.isnan(half)


# --------------------------------------------------------------------------------------------- verdict


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def test_verdict_is_computed_from_the_numbers() -> None:
    df = make_table()
    text = verdict.verdict(df, step=20, threshold=THRESHOLD)
    for method in runnames.METHODS:
        at20 = df[(df["method"] == method) & (df["step"] == 20)]["kl"]
        assert f"{_fmt(at20.mean())} ± {at20.std(ddof=1):.2g}" in text
    assert "KTO-S's KL is lower" in text and "over 3 seeds" in text
    assert "3/3 runs, KTO in 0/3" in text and "task accuracy" in text

    changed = verdict.verdict(make_table(kto_s_scale=2.0), step=20, threshold=THRESHOLD)
    assert changed != text
    at20 = 2.0 * (0.01 + 0.001 * 20 * np.array([1.0, 1.1, 1.2]))
    assert _fmt(at20.mean()) in changed

    worse = verdict.verdict(make_table(kto_s_scale=100.0), step=20, threshold=THRESHOLD)
    assert worse.startswith("KTO-S is not more stable here")


def test_verdict_single_seed_missing_step_and_divergence() -> None:
    one = verdict.verdict(make_table(seeds=(0,)), step=20, threshold=THRESHOLD)
    assert "±" not in one and "one seed each" in one

    df = make_table(diverged=(("kto", 5e-6, 2), 12))
    df = df[~((df["method"] == "kto_s") & (df["seed"] == 1) & (df["step"] > 17))]
    text = verdict.verdict(df, step=20, threshold=THRESHOLD)
    assert "this compares step 17" in text and "At step 17" in text
    assert "1 of 3 KTO runs diverged (at step 12)" in text
    assert "over 3 (KTO-S) and 2 (KTO) seeds" in text

    only = verdict.verdict(make_table()[lambda d: d["method"] == "kto"], threshold=THRESHOLD)
    assert "no comparison" in only


def test_write_tables(tmp_path: Path) -> None:
    csv = tmp_path / "kl.csv"
    make_table(lrs=(1e-6, 5e-6)).to_csv(csv, index=False)
    paths = verdict.write_tables(
        csv, tmp_path / "tables", threshold=THRESHOLD, checkpoints=(5, 10, 15, 20), first_n_steps=20
    )
    assert [p.name for p in paths] == ["kl_checkpoints.csv", "kl_checkpoints.md", "stability_map.csv",
                                       "frontier.csv", "verdict.md"]  # fmt: skip
    assert all(p.stat().st_size > 0 for p in paths)
    text = (tmp_path / "tables" / "verdict.md").read_text()
    assert text.index("lr 1e-6") < text.index("lr 5e-6")  # the default lr, then the other
    verdict.write_tables(csv, tmp_path / "tables", threshold=THRESHOLD, lr=5e-6)
    text = (tmp_path / "tables" / "verdict.md").read_text()
    assert text.index("lr 5e-6") < text.index("lr 1e-6")


# ------------------------------------------------------------------------------------------- run names


@pytest.mark.parametrize(("method", "lr", "seed", "name"), [
    ("kto_s", 1e-4, 3, "kto_s_lr0.0001_seed3"), ("kto", 1e-5, 0, "kto_lr1e-5_seed0"), ("kto", 3.16e-4, 12, "kto_lr0.000316_seed12"),
])  # fmt: skip
def test_run_names_round_trip(method: str, lr: float, seed: int, name: str) -> None:
    assert runnames.run_name(method, lr, seed) == name
    assert runnames.parse_run_name(name) == (method, lr, seed)


@pytest.mark.parametrize("name", ["dpo_lr0.0001_seed0", "kto_lr0.0001", "kto-s_lr1e-4_seed0", "ktos_lr1e-4_seed1"])
def test_unrecognised_run_names_are_errors(name: str) -> None:
    with pytest.raises(ValueError):
        runnames.parse_run_name(name)
