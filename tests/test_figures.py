"""Figures drawn from synthetic trajectory tables: which figures, shared limits, threshold, divergence, bytes.

Each fast test draws only the figure it checks; the one test that draws every figure of a full table
(twice, to compare bytes) is marked slow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import trajectory_table
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ktos.study.readings.analysis import Criteria, cell_summary, paired_table, run_summary
from ktos.study.report import figures as F

CHECKPOINTS = (5, 10, 15, 20)


def kl_figures(df: pd.DataFrame, criteria: Criteria | None = None, lr: float = 1e-4) -> tuple[Figure, Figure]:
    return F.draw_kl_figures(df, regime="main", lr=lr, criteria=criteria or Criteria(), checkpoints=CHECKPOINTS)


def line(fig: Figure, label: str) -> Line2D:
    return next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == label)


def probe_mean(df: pd.DataFrame, method: str, seeds: tuple[int, ...]) -> pd.Series:
    sub = df[(df["method"] == method) & df["seed"].isin(seeds)].dropna(subset=["probe_kl"])
    return sub.groupby("step")["probe_kl"].mean()


def test_figures_2_and_3_share_limits_and_geometry_and_draw_the_threshold() -> None:
    df = trajectory_table()  # KTO ends near 1.5 nats, KTO-S below 0.05: own limits would differ
    fig2, fig3 = kl_figures(df, Criteria(threshold=0.25))
    ax2, ax3 = fig2.axes[0], fig3.axes[0]
    assert ax2.get_ylim() == ax3.get_ylim() and ax2.get_xlim() == ax3.get_xlim()
    assert ax2.get_position().bounds == ax3.get_position().bounds
    assert tuple(fig2.get_size_inches()) == tuple(fig3.get_size_inches())
    assert ax3.get_ylim()[1] >= df.loc[df["method"] == "kto", "probe_kl"].max()  # KTO's seeds fit on Figure 3
    for fig in (fig2, fig3):
        threshold = line(fig, "threshold 0.25")
        assert np.allclose(np.asarray(threshold.get_ydata(), float), 0.25)
        assert "threshold 0.25" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Figure 2: KTO," in ax2.get_title() and "Figure 3: KTO-S," in ax3.get_title()
    assert "main, lr 0.0001, β 0.2, n = 3 seeds" in ax2.get_title()
    # Figure 3 repeats KTO's mean; each figure's mean and checkpoint markers are its own method's
    kto, kto_s = probe_mean(df, "kto", (0, 1, 2)), probe_mean(df, "kto_s", (0, 1, 2))
    assert np.allclose(line(fig3, "KTO mean (Fig. 2)").get_ydata(), kto.to_numpy())
    assert np.allclose(line(fig2, "mean ± 95% t-interval").get_ydata(), kto.to_numpy())
    assert np.allclose(line(fig3, "mean ± 95% t-interval").get_ydata(), kto_s.to_numpy())
    dots = line(fig3, "steps 5,10,15,20")
    assert list(dots.get_xdata()) == list(CHECKPOINTS)
    assert np.allclose(dots.get_ydata(), kto_s.loc[list(CHECKPOINTS)].to_numpy())


def test_kl_figure_limits_include_every_seed() -> None:
    df = trajectory_table(seeds=tuple(range(10)))
    df.loc[(df["method"] == "kto") & (df["seed"] == 9) & (df["step"] == 30), "probe_kl"] = 5.0  # above mean + CI
    df.loc[(df["method"] == "kto_s") & (df["seed"] == 4) & (df["step"] == 10), "probe_kl"] = -0.05
    for fig in kl_figures(df):
        low, high = fig.axes[0].get_ylim()
        assert low <= -0.05 and high >= 5.0


def test_diverged_runs_are_left_out_of_means_and_limits() -> None:
    df = trajectory_table(diverged=(("kto", 1e-4, 2), 30))  # 50 nats at its last step
    fig2, fig3 = kl_figures(df)
    kept = probe_mean(df, "kto", (0, 1))
    assert np.allclose(line(fig2, "mean ± 95% t-interval").get_ydata(), kept.to_numpy())
    assert np.allclose(line(fig3, "KTO mean (Fig. 2)").get_ydata(), kept.to_numpy())
    logged = df[(df["method"] == "kto") & (df["seed"] < 2)].groupby("step")["kl"].mean()
    assert np.allclose(line(fig2, "logged kl (mean)").get_ydata(), logged.to_numpy())
    assert fig2.axes[0].get_ylim()[1] < 50 and fig2.axes[0].get_ylim() == fig3.axes[0].get_ylim()
    assert "n = 2 seeds" in fig2.axes[0].get_title()


def test_paired_figure_joins_each_seeds_methods() -> None:
    df = trajectory_table(diverged=(("kto_s", 1e-4, 1), 30))
    runs = run_summary(df)
    pairs = paired_table(runs)
    fig = F.draw_paired(runs, regime="main", lr=1e-4, pairs=pairs)
    by = runs.set_index(["method", "seed"])
    for ax, metric in zip(fig.axes, ("final_probe_kl", "quality"), strict=True):
        drawn = [np.asarray(ln.get_ydata(), float) for ln in ax.get_lines() if list(ln.get_xdata()) == [0, 1]]
        joins = np.sort([y for y in drawn if np.isfinite(y).all()], axis=0)
        seeds = np.sort([[by.loc[("kto", s), metric], by.loc[("kto_s", s), metric]] for s in (0, 2)], axis=0)
        assert joins.shape == (2, 2) and np.allclose(joins, seeds)  # the diverged seed 1 is left out
        row = pairs[pairs["metric"] == metric].iloc[0]
        assert f"KTO-S − KTO: {row['diff']:+.3g}" in ax.get_title() and "of 2 seeds" in ax.get_title()
    assert F.draw_paired(runs[runs["method"] == "kto"], regime="main", lr=1e-4, pairs=pairs) is None


def test_frontier_needs_three_kto_learning_rates_and_paired_regimes_two_regimes() -> None:
    df = trajectory_table(regimes=("main", "sgd"), lrs=(3e-5, 1e-4, 3e-4), seeds=(0, 1))
    runs = run_summary(df)
    cells = cell_summary(df, runs)
    fig = F.draw_frontier(runs, cells, regime="main")
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert labels == {"3e-5", "0.0001", "0.0003"}  # one label per learning rate and method, same lrs
    assert len(fig.axes[0].texts) == 6
    two = runs[runs["lr"] != 3e-4]
    assert F.draw_frontier(two, cell_summary(df[df["lr"] != 3e-4], two), regime="main") is None

    pairs = paired_table(runs)
    fig = F.draw_paired_regimes(pairs)
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert rows == [f"{r}, lr {lr}" for r in ("main", "sgd") for lr in ("3e-5", "0.0001", "0.0003")]
    assert F.draw_paired_regimes(pairs[pairs["regime"] == "main"]) is None


def test_kto_only_regime_search_figures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    regimes = ("constant_s150_b0.2", "cosine_s40_b0.2", "constant_s40_b0.5")
    df = trajectory_table(regimes=regimes, methods=("kto",), lrs=(1e-5, 1e-4), seeds=(0, 1))
    csv = tmp_path / "kl.csv"
    df.to_csv(csv, index=False)
    saved: dict[str, Figure] = {}

    def record(fig: Figure, out_dir: Path, name: str) -> list[Path]:
        saved[name] = fig  # which figures draw_all makes; writing them is the slow test's job
        return [Path(out_dir) / f"{name}.png", Path(out_dir) / f"{name}.pdf"]

    monkeypatch.setattr(F, "save", record)
    monkeypatch.setattr(F, "draw_companion", lambda *a, **k: Figure())  # the costly one, drawn elsewhere
    paths = F.draw_all(csv, tmp_path / "out")
    assert set(saved) == {"fig2_kto_kl", "companion", "regime_search", "regime_trajectories"}  # no Figure 3
    assert len(paths) == 8

    runs = run_summary(df)
    cells = cell_summary(df, runs)
    heat = saved["regime_search"]
    titles = sorted(ax.get_title() for ax in heat.axes if ax.get_visible() and ax.get_title())
    assert titles == ["constant, 150 steps", "constant, 40 steps", "cosine, 40 steps"]
    arrows = sum(t.get_text().endswith("↑") for ax in heat.axes for t in ax.texts)
    assert arrows == int(cells["runaway"].sum()) == 3  # lr 1e-4 in every regime
    panels = sorted(ax.get_title() for ax in saved["regime_trajectories"].axes if ax.get_title())
    assert panels == ["constant, 150 steps", "cosine, 40 steps"]  # beta 0.2 only

    monkeypatch.undo()
    single = trajectory_table(methods=("kto",))
    assert F.draw_regime_search(cell_summary(single, run_summary(single))) is None
    assert F.draw_regime_trajectories(single, beta=0.2) is None


def test_redrawn_figure_has_identical_bytes(tmp_path: Path) -> None:
    df = trajectory_table(seeds=(0, 1))
    first = F.save(kl_figures(df)[0], tmp_path / "a", "fig2_kto_kl")
    second = F.save(kl_figures(df)[0], tmp_path / "b", "fig2_kto_kl")
    assert [p.name for p in first] == ["fig2_kto_kl.png", "fig2_kto_kl.pdf"]
    assert first[0].read_bytes()[:4] == b"\x89PNG" and first[1].read_bytes()[:4] == b"%PDF"
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


@pytest.mark.slow
def test_draw_all_on_a_full_table_writes_every_figure_reproducibly(tmp_path: Path) -> None:
    csv = tmp_path / "kl.csv"
    table = trajectory_table(regimes=("main", "sgd"), lrs=(3e-5, 1e-4, 3e-4), diverged=(("main", "kto", 1e-4, 2), 30))
    table.to_csv(csv, index=False)
    first = F.draw_all(csv, tmp_path / "a", regime="main", lr=1e-4, checkpoints=CHECKPOINTS)
    second = F.draw_all(csv, tmp_path / "b", regime="main", lr=1e-4, checkpoints=CHECKPOINTS)
    names = {p.stem for p in first}
    assert {"fig2_kto_kl", "fig3_kto_s_kl", "paired", "companion", "frontier", "paired_regimes"} <= names
    assert sorted(p.name for p in first) == sorted(f"{n}.{ext}" for n in names for ext in ("png", "pdf"))
    for p in first:
        assert p.read_bytes()[:4] == (b"\x89PNG" if p.suffix == ".png" else b"%PDF"), p
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_the_policy_kl_is_drawn_beside_the_probe_and_against_it(tmp_path: Path) -> None:
    """With a policy_kl column the relation figure exists, and Figure 2 carries a policy-KL line; without one,
    neither (so that committed tables written before the policy KL redraw as they were)."""
    from ktos.study.report.policy_kl_figures import draw_kl_relation, measured

    df = trajectory_table()
    assert draw_kl_relation(df) is None and measured(df).empty
    rows = df["step"] % 10 == 0
    with_policy = df.assign(policy_kl=np.where(rows, 0.5 * df["probe_kl"].abs(), np.nan))
    fig = draw_kl_relation(with_policy)
    assert fig is not None and fig.axes[0].collections, "no points drawn"
    assert "over 6 runs" in fig.axes[0].get_title()
    csv = tmp_path / "t.csv"
    with_policy.to_csv(csv, index=False)
    paths = F.draw_all(csv, tmp_path / "out", names=["fig2_kto_kl", "kl_relation"])
    assert {p.name for p in paths} == {"fig2_kto_kl.png", "fig2_kto_kl.pdf", "kl_relation.png", "kl_relation.pdf"}
    kwargs = {"regime": "main", "lr": 1e-4, "criteria": Criteria(), "checkpoints": (10, 20)}

    def policy_lines(table: pd.DataFrame) -> list[str]:
        fig2 = F.draw_kl_figures(table, **kwargs)[0]
        return [line.get_label() for line in fig2.axes[0].get_lines() if line.get_label() == "policy KL (mean)"]

    assert policy_lines(with_policy) == ["policy KL (mean)"] and policy_lines(df) == []
    plain = tmp_path / "plain.csv"
    df.to_csv(plain, index=False)
    with pytest.raises(ValueError, match="kl_relation"):  # planned, but the table lacks it: an error, not a page
        F.draw_all(plain, tmp_path / "plain", names=["kl_relation"])
