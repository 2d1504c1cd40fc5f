"""What a study's analysis writes: the one list of every figure and table file, and the flags of ``ktos
figures`` and ``ktos tables``.

Planned from the config, and for a committed reference (origin ``reference``) also from what its committed files
hold (the trajectory table's columns, whether the runs' records kept each held-out item's outcome), read when the
workflow is parsed. The workflow declares each of these files (``workflow/rules/figures.smk``), so deleting one
makes its rule run again, and hands the names to ``ktos figures --names`` and ``ktos tables --names``, which write
exactly these and fail when the data cannot make one: the writers decide nothing. Standard library only, like
:mod:`ktos.study.plan.planning`.
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from ...loss_types import KTO, KTO_S
from ...runnames import lr_tag
from .planning import Plan, cli_flags

#: The figures ``ktos figures`` can draw, in drawing order (:func:`ktos.study.report.figures.draw_all`).
FIGURES = (
    "fig2_kto_kl", "fig3_kto_s_kl", "paired", "companion", "regime_search", "regime_trajectories", "frontier",
    "paired_regimes", "scale", "envelope", "matched_frontier", "curve_frontier", "kl_relation",
)  # fmt: skip
#: The file types each figure is saved as.
FIGURE_SUFFIXES = (".png", ".pdf")
#: The tables every study writes (``ktos tables``), each ``<name>.csv``; :data:`BASE_TABLES` with several
#: bases, ``seed_sets`` and ``predictions_observed`` when the config asks for them.
TABLES = (
    "runs", "cells", "paired", "matched_kl", "checkpoints", "kl_ratio", "envelope", "early_stopping", "scale",
    "drivers", "size_fit", "size_predictions",
)  # fmt: skip
#: The tables that judge each cell over several bases (:mod:`ktos.study.readings.base_factor`), and the policy KL's
#: trend judged so where the runs measured it.
BASE_TABLES = ("base_cells", "base_trends", "base_paired")
POLICY_TRENDS_TABLE = "policy_trends"
#: The tables of the matched-KL frontier over item sets (:mod:`ktos.study.readings.matched_frontier`).
ITEM_FRONTIER_TABLES = ("best_checkpoint", "frontier")
#: The frontier read from fitted curves, in the policy KL and the probe KL (:mod:`ktos.study.readings.curve_frontier`).
CURVE_FRONTIER_TABLE = "curve_frontier"


def table_names(
    *,
    several_bases: bool,
    seed_sets: bool,
    predictions: bool,
    item_frontier: bool = False,
    policy_kl: bool = False,
) -> list[str]:
    """The tables (without ``.csv``) of a study over one base or several, with or without seed sets to compare,
    predictions to check, task accuracy along the way of KTO and another method (the matched-KL frontier) and the
    policy KL measured (over several bases: its trend, and with the frontier, the frontier read from fitted curves,
    whose interval is over bases): what
    :func:`ktos.study.report.verdict.write_tables` writes, beside ``verdict.md``."""
    return [
        *TABLES,
        *(BASE_TABLES if several_bases else ()),
        *((POLICY_TRENDS_TABLE,) if several_bases and policy_kl else ()),
        *(("seed_sets",) if seed_sets else ()),
        *(("predictions_observed",) if predictions else ()),
        *(ITEM_FRONTIER_TABLES if item_frontier else ()),
        *((CURVE_FRONTIER_TABLE,) if item_frontier and policy_kl and several_bases else ()),
    ]


@dataclass(frozen=True)
class Outputs:
    """The figures, tables and analysis flags of a study's :class:`~ktos.study.plan.planning.Plan`."""

    plan: Plan

    @property
    def analysis_flags(self) -> str:
        """`ktos figures` / `ktos tables` flags: the headline cell and the analysis settings."""
        plan = self.plan
        analysis = plan.config["analysis"]
        flags = cli_flags(
            {
                "regime": plan.headline_regime,
                "lr": lr_tag(plan.config["headline"]["lr"]),
                **{key: analysis[key] for key in ("threshold", "window", "margin")},
                "phase-end": analysis["phase_end"],
                "beta": analysis["beta"],
                "search-steps": analysis["search_steps"],
            }
        )
        flags += " --checkpoints " + " ".join(str(s) for s in analysis["checkpoints"])
        if analysis["predictions"]:
            flags += f" --predictions {shlex.quote(str(plan.root / analysis['predictions']))}"
        for flag, key in (("--seed-sets", "seed_sets"), ("--arms", "arms")):
            if analysis[key]:
                flags += f" {flag} " + " ".join(shlex.quote(f"{k}={v}") for k, v in analysis[key].items())
        return flags

    @property
    def several_bases(self) -> bool:
        """Whether every run is repeated from more than one base model (the pooled analysis over bases)."""
        config = self.plan.config
        return config["model"]["name_or_path"] is None and len(config["synthetic"]["base_seeds"]) > 1

    def table_names(self, origin: str) -> list[str]:
        """The tables (:func:`table_names`, without ``.csv``) of a trajectory table of ``origin``."""
        analysis = self.plan.config["analysis"]
        return table_names(
            several_bases=self.several_bases,
            seed_sets=bool(analysis["seed_sets"]),
            predictions=bool(analysis["predictions"]),
            item_frontier=self.item_frontier(origin),
            policy_kl=self.policy_kl(origin),
        )

    def item_frontier(self, origin: str) -> bool:
        """Whether the study reads the matched-KL frontier over held-out items: KTO and another method, KTO at two
        learning rates or more in the headline regime (over one, every checkpoint lies on one trajectory), task
        accuracy measured along the way, and (``reference``) committed records that kept each item's outcome."""
        plan = self.plan
        methods = set(plan.config["methods"])
        return (
            KTO in methods
            and len(methods) > 1
            and len(plan.learning_rates(plan.headline_regime, KTO)) > 1
            and self.measured(origin)
            and (origin == "studies" or self._committed_item_outcomes)
        )

    def measured(self, origin: str) -> bool:
        """Whether the runs measure task accuracy before their last step (the synthetic task's held-out items), and
        (``reference``) the committed trajectory table holds it (``step_quality_val``)."""
        plan = self.plan
        steps = plan.regime_train(plan.headline_regime, "max_steps")
        planned = plan.is_synthetic and any(s < steps for s in plan.config["train"]["quality_steps"])
        return planned and (origin == "studies" or "step_quality_val" in self._committed_columns)

    def policy_kl(self, origin: str) -> bool:
        """Whether the runs measure the policy KL (train.policy_kl_size > 0), and (``reference``) the committed
        trajectory table holds it."""
        planned = self.plan.config["train"]["policy_kl_size"] > 0
        return planned and (origin == "studies" or "policy_kl" in self._committed_columns)

    @functools.cached_property
    def _committed_columns(self) -> frozenset[str]:
        """The columns of the committed trajectory table (none when there is none)."""
        path = self.plan.root / self.figure_table("reference")
        if not path.exists():
            return frozenset()
        with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open() as f:
            return frozenset(next(csv.reader(f), []))

    @functools.cached_property
    def _committed_item_outcomes(self) -> bool:
        """Whether the committed runs' records kept each held-out item's outcome along the way (their first
        record's ``step_quality_correct``; ``ktos extract-kl`` writes one per run, all from one version)."""
        records = self.run_info("reference")
        if records is None:
            return False
        with gzip.open(self.plan.root / records, "rt", encoding="utf-8") as f:
            first = json.loads(next(f, "{}"))
        return bool(first.get("step_quality_correct"))

    def run_info(self, origin: str) -> str | None:
        """The runs' records beside the trajectory table of ``origin`` (``None`` when a given table has none)."""
        records = Path(self.figure_table(origin)).with_name("run_info.jsonl.gz")
        if origin == "studies" or (self.plan.root / records).exists():
            return str(records)
        return None

    def _paired_regimes(self) -> list[str]:
        """The regimes in which KTO-S is trained beside KTO at a shared learning rate."""
        plan = self.plan
        if not {KTO, KTO_S} <= set(plan.config["methods"]):
            return []
        return [
            r
            for r in plan.regime_names
            if {lr_tag(x) for x in plan.learning_rates(r, KTO)} & {lr_tag(x) for x in plan.learning_rates(r, KTO_S)}
        ]

    def figure_names(self, origin: str) -> list[str]:
        """The figures of a trajectory table of ``origin``, by the rules of :func:`ktos.study.report.figures.draw_all`:
        KTO-S's figures need KTO-S, the regime search's a KTO-only study over several regimes, the frontier three
        KTO learning rates, the scale figure several model sizes, the envelope one base and task accuracy measured
        along the way, the matched-KL frontier :meth:`item_frontier`, the probe KL against the policy KL
        :meth:`policy_kl`."""
        plan = self.plan
        config, regime = plan.config, plan.headline_regime
        methods = set(config["methods"])
        kto_only = methods == {KTO}
        at_beta = [r for r in plan.regime_names if plan.regime_train(r, "beta") == config["analysis"]["beta"]]
        sizes = {plan.regime_size(r) for r in plan.regime_names}
        shown = {
            "fig2_kto_kl": KTO in methods,
            "fig3_kto_s_kl": KTO_S in methods,
            "paired": {KTO, KTO_S} <= methods,
            "companion": True,
            "regime_search": kto_only and len(plan.regime_names) > 1,
            "regime_trajectories": kto_only and len(at_beta) > 1,
            "frontier": KTO_S in methods and len(plan.learning_rates(regime, KTO)) >= 3,
            "paired_regimes": len(self._paired_regimes()) > 1,
            "scale": config["model"]["name_or_path"] is None and len(sizes) > 1,
            "envelope": not self.several_bases and len(methods) > 1 and self.measured(origin),
            "matched_frontier": self.item_frontier(origin),
            "curve_frontier": self.item_frontier(origin) and self.policy_kl(origin) and self.several_bases,
            "kl_relation": self.policy_kl(origin),
        }
        return [name for name in FIGURES if shown[name]]

    def output_dir(self, origin: str) -> str:
        """Where the figures and tables of a trajectory table of ``origin`` go: results/studies/<study> beside
        this workflow's runs, results/redrawn/<study> for the committed reference's (never into the committed
        results/reference/<study>: a failing job must not delete a committed file, and a test compares the two)."""
        return f"results/{'studies' if origin == 'studies' else 'redrawn'}/{self.plan.study}"

    def figure_table(self, origin: str) -> str:
        """The trajectory table figures and tables are drawn from: this study's (origin studies), else
        analysis.table or the committed reference copy, under the workflow's repository (so that the workflow
        used as a module from another directory finds it)."""
        table = self.plan.config["analysis"]["table"]
        if origin == "studies":
            return f"{self.output_dir(origin)}/trajectories.csv.gz"
        return str(self.plan.root / (table or f"results/reference/{self.plan.study}/trajectories.csv.gz"))

    def figure_files(self, origin: str) -> list[str]:
        """Every file ``ktos figures`` writes for a table of ``origin`` (each figure as PNG and PDF)."""
        return [f"{self.output_dir(origin)}/figures/{n}{s}" for n in self.figure_names(origin) for s in FIGURE_SUFFIXES]

    def table_files(self, origin: str) -> list[str]:
        """Every file ``ktos tables`` writes for a table of ``origin``: ``verdict.md`` and the tables."""
        out = f"{self.output_dir(origin)}/tables"
        return [f"{out}/verdict.md", *(f"{out}/{name}.csv" for name in self.table_names(origin))]
