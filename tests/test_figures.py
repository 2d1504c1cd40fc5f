"""Figures drawn from a synthetic trajectory table: files, shared limits, threshold, divergence, bytes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import trajectory_table as make_table
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ktos import figures as F

THRESHOLD = 0.1
NAMES = ("fig2_kto_kl", "fig3_kto_s_kl", "companion", "probe_kl", "frontier", "stability_map")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[Path]]:
    """The full table (two lrs, one diverged run) drawn twice into two dirs."""
    root = tmp_path_factory.mktemp("figs")
    csv = root / "kl.csv"
    make_table(lrs=(1e-6, 5e-6), seeds=(0, 1, 2), diverged=(("kto", 1e-6, 2), 12)).to_csv(csv, index=False)
    first = F.draw_all(csv, root / "a", threshold=THRESHOLD, checkpoints=(5, 10, 15, 20))
    second = F.draw_all(csv, root / "b", threshold=THRESHOLD, checkpoints=(5, 10, 15, 20))
    return csv, first, second


def test_draw_all_writes_png_and_pdf_for_each_figure(drawn) -> None:
    _, first, _ = drawn
    assert sorted(p.name for p in first) == sorted(f"{n}.{ext}" for n in NAMES for ext in ("png", "pdf"))
    for p in first:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF"), p


def test_redraw_gives_identical_bytes(drawn) -> None:
    _, first, second = drawn
    for a, b in zip(first, second, strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes(), a.name


def _threshold_lines(fig: Figure, y: float) -> list[Line2D]:
    return [ln for ax in fig.axes for ln in ax.get_lines()
            if len(ln.get_ydata()) >= 2 and np.allclose(np.asarray(ln.get_ydata(), float), y)]  # fmt: skip


def _line(fig: Figure, label: str) -> Line2D:
    return next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == label)


def test_fig2_fig3_share_ylim_and_draw_the_threshold() -> None:
    df = make_table()
    fig2, fig3 = F.draw_kl_figures(df, threshold=THRESHOLD, checkpoints=(5, 10, 15, 20))
    assert fig2.axes[0].get_ylim() == fig3.axes[0].get_ylim()
    assert fig2.axes[0].get_position().bounds == fig3.axes[0].get_position().bounds
    assert fig2.axes[0].get_ylim()[1] >= df["kl"].max()  # KTO's largest seed fits, also on Figure 3
    for fig in (fig2, fig3):
        assert _threshold_lines(fig, THRESHOLD), "no horizontal threshold line"
        assert any(t.get_text() == f"threshold {THRESHOLD:g}" for t in fig.legends[0].get_texts())
    assert "lr 5e-6" in fig2.axes[0].get_title() and "n = 3 seeds" in fig2.axes[0].get_title()
    assert "β 0.2" in fig3.axes[0].get_title()
    # Figure 3 repeats KTO's mean faintly; the checkpoint dots sit on KTO-S's mean at those steps.
    ref = _line(fig3, "KTO mean (Figure 2)")
    assert ref.get_alpha() == pytest.approx(0.4)
    dots = _line(fig3, "mean at steps 5, 10, 15, 20")
    kto_s = df[df["method"] == "kto_s"].groupby("step")["kl"].mean()
    assert list(dots.get_xdata()) == [5, 10, 15, 20]
    assert np.allclose(dots.get_ydata(), kto_s.loc[[5, 10, 15, 20]].to_numpy())


@pytest.mark.parametrize("spike", [80.0, math.nan])  # the trainer logs a non-finite kl at divergence
def test_diverged_run_is_marked_and_left_out_of_the_mean(spike: float) -> None:
    df = make_table(diverged=(("kto", 5e-6, 2), 12))
    df.loc[df["kl"] == 80.0, "kl"] = spike
    fig2, fig3 = F.draw_kl_figures(df, threshold=THRESHOLD)
    crosses = [ln for ln in fig2.axes[0].get_lines() if ln.get_marker() == "x" and len(ln.get_xdata())]
    assert len(crosses) == 1 and crosses[0].get_xdata()[0] == 12
    assert crosses[0].get_ydata()[0] < fig2.axes[0].get_ylim()[1]  # pulled inside the axes
    mean = _line(fig2, "KTO mean ± 95% CI")
    expected = df[(df["method"] == "kto") & (df["seed"] < 2)].groupby("step")["kl"].mean()
    assert np.allclose(mean.get_ydata(), expected.to_numpy())
    assert fig2.axes[0].get_ylim()[1] < 80  # the divergence spike does not set the shared limits
    assert fig2.axes[0].get_ylim() == fig3.axes[0].get_ylim()


def test_companion_panels_and_gradient_weights() -> None:
    fig = F.draw_companion(make_table())
    assert len(fig.axes) == 6
    grad = fig.axes[4]
    assert len(grad.get_lines()) == 2 * len(F.Z0_GRID)  # KTO and KTO-S at each z0
    peak = max(max(ln.get_ydata()) for ln in grad.get_lines())
    assert peak == pytest.approx(0.2 / 4, rel=1e-3)  # beta * sigmoid'(0), beta taken from the table
    assert "β 0.2" in fig.get_suptitle()


def test_optional_figures_are_skipped(tmp_path: Path) -> None:
    csv = tmp_path / "kl.csv"
    make_table(probe=False, quality=False).to_csv(csv, index=False)
    paths = F.draw_all(csv, tmp_path / "out", threshold=THRESHOLD)
    assert sorted({p.stem for p in paths}) == ["companion", "fig2_kto_kl", "fig3_kto_s_kl"]
    df = make_table(lrs=(1e-6, 5e-6))
    assert F.draw_stability_map(df, threshold=THRESHOLD, first_n_steps=20) is not None
    assert F.draw_frontier(df) is not None and F.draw_probe(df) is not None
