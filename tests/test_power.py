"""The frontier's power analysis (ktos.study.readings.power; docs/study.md, fifth amendment)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ktos.study.readings import power

SD = {"base": 0.02, "seed": 0.01, "item": 0.05, "base_item": 0.04, "residual": 0.3}
FRONTIER = Path(__file__).resolve().parents[1] / "results" / "reference" / "frontier"


def _simulate(rng: np.random.Generator, b: int, s: int, i: int, sd: dict[str, float] = SD) -> np.ndarray:
    return (
        sd["base"] * rng.standard_normal((b, 1, 1))
        + sd["seed"] * rng.standard_normal((b, s, 1))
        + sd["item"] * rng.standard_normal((1, 1, i))
        + sd["base_item"] * rng.standard_normal((b, 1, i))
        + sd["residual"] * rng.standard_normal((b, s, i))
    )


def test_variance_components_recovered_on_simulated_data():
    rng = np.random.default_rng(0)
    vc = [power.variance_components(_simulate(rng, 30, 5, 400)) for _ in range(20)]
    for name, sd in SD.items():
        estimate = np.mean([v[name] for v in vc])
        assert estimate == pytest.approx(sd**2, rel=0.25), name


def test_standard_error_matches_monte_carlo_of_the_design():
    rng = np.random.default_rng(1)
    b, s, i = 6, 2, 150
    means = [_simulate(rng, b, s, i).mean() for _ in range(3000)]
    assert np.std(means, ddof=1) == pytest.approx(power.standard_error({k: v**2 for k, v in SD.items()}, b, s, i),
                                                  rel=0.06)  # fmt: skip


def test_detectable_shrinks_as_one_over_root_bases_with_only_the_base_term():
    s2 = {"base": 0.01, "seed": 0.0, "item": 0.0, "base_item": 0.0, "residual": 0.0}
    se = [power.standard_error(s2, b, 3, 1000) for b in (4, 16, 64)]
    assert se[0] / se[1] == pytest.approx(2.0) and se[1] / se[2] == pytest.approx(2.0)
    assert power.standard_error(s2, 4, 3, 1000) == power.standard_error(s2, 4, 30, 10**6)  # seeds, items: no help


def test_curve_weights_reproduce_a_quadratic_in_root_kl():
    kl = np.array([0.1, 0.3, 0.6, 0.9, 1.4, 2.0, 2.8, np.nan, 3.5])
    acc = 0.6 + 0.2 * np.sqrt(np.nan_to_num(kl)) - 0.1 * np.nan_to_num(kl)
    h = power.curve_weights(kl, 0.75)
    assert h[7] == 0 and h[8] == 0  # missing and above KL_FIT_MAX
    assert (h * acc).sum() == pytest.approx(0.6 + 0.2 * math.sqrt(0.75) - 0.075)
    assert np.isnan(power.curve_weights(kl, 5.0)).all()  # no checkpoint beyond the point read: no reading


def _reaches(s2, b, s, i):
    se = power.standard_error(s2, b, s, i)
    return se <= power.se_equivalence(b) and power.detectable(se, b) <= power.MARGIN


def test_smallest_design_is_the_cheapest_reaching_equivalence_power():
    s2 = {"base": 1e-4, "seed": 3e-5, "item": 1e-4, "base_item": 1e-3, "residual": 1e-3}
    d = power.smallest_design(s2, n_items=3000)
    assert _reaches(s2, d["n_bases"], d["n_seeds"], 3000) and d["n_seeds"] >= power.MIN_SEEDS
    cheaper = [(b, s) for b in range(2, 61) for s in range(power.MIN_SEEDS, 9)
               if power.run_cost_s(b, s) < d["cost_s"] and _reaches(s2, b, s, 3000)]  # fmt: skip
    assert not cheaper
    assert power.detectable(power.se_equivalence(5), 5) > power.MARGIN  # few bases: equivalence bound is not enough
    row = power._power_row(0.5, 1.0, "x", "point", 8, 2, 3000, power.se_equivalence(8), 60.0)
    assert row["equivalence_power"] == pytest.approx(0.8, abs=1e-6)
    out = power.smallest_design(dict(s2, item=1.0), n_items=3000)  # item term alone above the margin: out of reach
    assert out["n_bases"] == 0 and not out["within_budget"]


def test_committed_tables_are_what_the_code_computes(tmp_path):
    power.write_power(str(FRONTIER / "trajectories.csv.gz"), str(FRONTIER / "run_info.jsonl.gz"),
                      str(FRONTIER / "tables" / "frontier.csv"), str(tmp_path))  # fmt: skip
    for name in ("power", "variance_components", "coverage", "sensitivity"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / f"{name}.csv"), pd.read_csv(FRONTIER / "power" / f"{name}.csv")
        )


def test_every_nth_step_keeps_the_multiples_and_the_last_step():
    steps = np.array([10, 20, 30, 40, 50])
    shape = (1, 1, len(steps), 2)
    cp = power.ItemCheckpoints(["kto"], np.array([1e-5]), steps, ["b"], np.array([15, 16]), np.array([0, 0]),
                               np.arange(np.prod(shape), dtype=float).reshape(shape),
                               np.zeros((*shape, 3), dtype=np.float32))  # fmt: skip
    thin = power.every_nth_step(cp, 20)
    assert thin.steps.tolist() == [20, 40, 50]
    assert thin.kl[0, 0, :, 1].tolist() == cp.kl[0, 0, [1, 3, 4], 1].tolist() and thin.correct.shape[2] == 3
