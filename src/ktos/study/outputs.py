"""What a study's analysis writes, planned from its config: every figure and table file, and the flags of
``ktos figures`` and ``ktos tables``.

The workflow declares each of these files (``workflow/rules/figures.smk``), so deleting one makes its rule
run again; :func:`ktos.study.figures.draw_all` and :func:`ktos.study.verdict.write_tables` write exactly these
names (:data:`FIGURES`, :func:`table_names`). Standard library only, like :mod:`ktos.study.planning`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from .planning import Plan, cli_flags
from .runnames import lr_tag

#: The figures ``ktos figures`` can draw, in drawing order (:func:`ktos.study.figures.draw_all`).
FIGURES = (
    "fig2_kto_kl", "fig3_kto_s_kl", "paired", "companion", "regime_search", "regime_trajectories", "frontier",
    "paired_regimes", "scale", "envelope", "matched_frontier",
)  # fmt: skip
#: The file types each figure is saved as.
FIGURE_SUFFIXES = (".png", ".pdf")
#: The tables every study writes (``ktos tables``), each ``<name>.csv``; :data:`BASE_TABLES` with several
#: bases, ``seed_sets`` and ``predictions_observed`` when the config asks for them.
TABLES = (
    "runs", "cells", "paired", "matched_kl", "checkpoints", "kl_ratio", "envelope", "early_stopping", "scale",
    "drivers", "size_fit", "size_predictions",
)  # fmt: skip
#: The tables that judge each cell over several bases (:mod:`ktos.study.base_factor`).
BASE_TABLES = ("base_cells", "base_trends", "base_paired")
#: The tables of the matched-KL frontier over item sets (:mod:`ktos.study.matched_frontier`).
ITEM_FRONTIER_TABLES = ("best_checkpoint", "frontier")


def table_names(*, several_bases: bool, seed_sets: bool, predictions: bool, item_frontier: bool = False) -> list[str]:
    """The tables (without ``.csv``) of a study over one base or several, with or without seed sets to compare,
    predictions to check and task accuracy along the way of KTO and another method (the matched-KL frontier):
    what :func:`ktos.study.verdict.write_tables` writes, beside ``verdict.md``."""
    return [
        *TABLES,
        *(BASE_TABLES if several_bases else ()),
        *(("seed_sets",) if seed_sets else ()),
        *(("predictions_observed",) if predictions else ()),
        *(ITEM_FRONTIER_TABLES if item_frontier else ()),
    ]


@dataclass(frozen=True)
class Outputs:
    """The figures, tables and analysis flags of a study's :class:`~ktos.study.planning.Plan`."""

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

    @property
    def table_names(self) -> list[str]:
        """The study's tables (:func:`table_names`), without ``.csv``."""
        analysis = self.plan.config["analysis"]
        return table_names(
            several_bases=self.several_bases,
            seed_sets=bool(analysis["seed_sets"]),
            predictions=bool(analysis["predictions"]),
            item_frontier=self.item_frontier,
        )

    @property
    def item_frontier(self) -> bool:
        """Whether the study writes the matched-KL frontier (``has_item_frontier`` of its table, read off the
        config): KTO and another method, task accuracy on held-out items measured along the way."""
        config = self.plan.config
        methods = set(config["methods"])
        return "kto" in methods and len(methods) > 1 and self._measured

    @property
    def _measured(self) -> bool:
        """Whether the runs measure task accuracy before their last step (the synthetic task's held-out items)."""
        plan = self.plan
        steps = plan.regime_train(plan.headline_regime, "max_steps")
        return plan.is_synthetic and any(s < steps for s in plan.config["train"]["quality_steps"])

    def run_info(self, origin: str) -> str | None:
        """The runs' records beside the trajectory table of ``origin`` (``None`` when a given table has none)."""
        records = Path(self.figure_table(origin)).with_name("run_info.jsonl.gz")
        if origin == "studies" or (self.plan.root / records).exists() or records.exists():
            return str(records)
        return None

    def _paired_regimes(self) -> list[str]:
        """The regimes in which KTO-S is trained beside KTO at a shared learning rate."""
        plan = self.plan
        if not {"kto", "kto_s"} <= set(plan.config["methods"]):
            return []
        return [
            r
            for r in plan.regime_names
            if {lr_tag(x) for x in plan.learning_rates(r, "kto")} & {lr_tag(x) for x in plan.learning_rates(r, "kto_s")}
        ]

    @property
    def figure_names(self) -> list[str]:
        """The figures the study's table supports, by the rules of :func:`ktos.study.figures.draw_all` read off
        the config: KTO-S's figures need KTO-S, the regime search's a KTO-only study over several regimes, the
        frontier three KTO learning rates, the scale figure several model sizes, the envelope one base and task
        accuracy measured along the way."""
        plan = self.plan
        config, regime = plan.config, plan.headline_regime
        methods = set(config["methods"])
        kto_only = methods == {"kto"}
        at_beta = [r for r in plan.regime_names if plan.regime_train(r, "beta") == config["analysis"]["beta"]]
        measured = self._measured
        sizes = {plan.regime_size(r) for r in plan.regime_names}
        shown = {
            "fig2_kto_kl": "kto" in methods,
            "fig3_kto_s_kl": "kto_s" in methods,
            "paired": {"kto", "kto_s"} <= methods,
            "companion": True,
            "regime_search": kto_only and len(plan.regime_names) > 1,
            "regime_trajectories": kto_only and len(at_beta) > 1,
            "frontier": "kto_s" in methods and len(plan.learning_rates(regime, "kto")) >= 3,
            "paired_regimes": len(self._paired_regimes()) > 1,
            "scale": config["model"]["name_or_path"] is None and len(sizes) > 1,
            "envelope": not self.several_bases and len(methods) > 1 and measured,
            "matched_frontier": self.item_frontier,
        }
        return [name for name in FIGURES if shown[name]]

    def output_dir(self, origin: str) -> str:
        """results/<origin>/<study>: where the figures and tables of a trajectory table of ``origin`` go."""
        return f"results/{origin}/{self.plan.study}"

    def figure_table(self, origin: str) -> str:
        """The trajectory table figures and tables are drawn from: this study's (origin studies), else
        analysis.table or the committed reference copy."""
        table = self.plan.config["analysis"]["table"]
        if origin == "studies" or not table:
            return f"{self.output_dir(origin)}/trajectories.csv.gz"
        return str(table)

    def figure_files(self, origin: str) -> list[str]:
        """Every file ``ktos figures`` writes for a table of ``origin`` (each figure as PNG and PDF)."""
        return [f"{self.output_dir(origin)}/figures/{n}{s}" for n in self.figure_names for s in FIGURE_SUFFIXES]

    def table_files(self, origin: str) -> list[str]:
        """Every file ``ktos tables`` writes for a table of ``origin``: ``verdict.md`` and the tables."""
        out = f"{self.output_dir(origin)}/tables"
        return [f"{out}/verdict.md", *(f"{out}/{name}.csv" for name in self.table_names)]
