r"""Every table of a study, computed once from the tidy trajectory table: the one entry point of both output
stages.

:func:`load_study` reads a trajectory table, picks the headline cell and builds every table (:class:`StudyTables`)
into a :class:`Study`; ``ktos tables`` (:func:`ktos.study.report.verdict.write_tables`) writes them with
``verdict.md``, and ``ktos figures`` (:func:`ktos.study.report.figures.draw_all`) draws from the same tables. The
tables: the per-run, per-cell and paired tables, checkpoints, the KL ratio, the envelope and early stopping
(their header alone when a study has neither), the size law's tables, and the pooled tables over bases, the
seed-set comparison, the checked predictions and the matched-KL frontier when the study has them.

No torch: ``ktos tables`` runs in the analysis env.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..plan.outputs import CURVE_FRONTIER_TABLE, POLICY_TRENDS_TABLE, table_names
from .analysis import (
    Criteria,
    cell_summary,
    headline,
    kl_ratio_over_time,
    matched_kl,
    paired_table,
    run_summary,
)
from .base_factor import pooled_cells, pooled_paired, pooled_trends, seed_set_table
from .checkpoint_envelope import EARLY_STOPPING_COLUMNS, ENVELOPE_COLUMNS, early_stopping_table, envelope_table
from .checkpoint_envelope import checkpoints as trajectory_checkpoints
from .curve_frontier import curve_frontier_table
from .matched_frontier import frontier_tables, has_item_frontier, read_run_infos
from .rundir import read_table
from .scale import check_predictions, drivers, scale_table, size_fit, size_predictions


def checkpoint_table(df: pd.DataFrame, steps: Sequence[int]) -> pd.DataFrame:
    """Mean probe KL and logged kl (and the policy KL, where the runs measured it) across the non-diverged seeds of
    each regime x method x lr at ``steps``."""
    sub = df[df["step"].isin(steps) & (df["status"] != "diverged")]
    measured = "policy_kl" in sub and bool(np.isfinite(pd.to_numeric(sub["policy_kl"], errors="coerce")).any())
    columns = ["probe_kl", "kl", *(["policy_kl"] if measured else [])]
    out = sub.groupby(["regime", "method", "lr", "step"])[columns].agg(["mean", "std", "count"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    return out.reset_index()


#: The tables computed on each base's runs (seeds are the unit, docs/study.md's rules before the third amendment),
#: each with a first column ``base`` when the table records bases, in the order :class:`StudyTables` names them.
PER_BASE = (
    "runs", "cells", "paired", "matched_kl", "checkpoints", "kl_ratio", "envelope", "early_stopping", "scale",
    "drivers",
)  # fmt: skip


def _with_base(table: pd.DataFrame, base: str) -> pd.DataFrame:
    """``table`` with a first column ``base``."""
    return table.drop(columns="base", errors="ignore").assign(base=base)[
        ["base", *table.columns.drop("base", errors="ignore")]
    ]


class StudyTables(Mapping[str, pd.DataFrame]):
    """Every table of the study from the tidy trajectory table, each computed once, when first asked for: ``ktos
    tables`` asks for all of them, ``ktos figures`` for those its figures draw.

    Each per-cell table (:data:`PER_BASE`) is computed on each base's runs and has a ``base`` column; with two or
    more bases the pooled tables of :mod:`ktos.study.readings.base_factor` (``base_cells``, ``base_trends``,
    ``base_paired``) judge each cell over bases and seeds. The size law (``size_fit``, ``size_predictions``) is
    fitted over every base's cells. With the runs' records (``run_infos``) holding each held-out item's outcome,
    ``best_checkpoint`` and ``frontier`` (:mod:`ktos.study.readings.matched_frontier`) read the frontier at matched KL
    over bases, seeds and items."""

    def __init__(
        self,
        df: pd.DataFrame,
        *,
        regime: str | None,
        lr: float | None,
        criteria: Criteria,
        checkpoints: Sequence[int],
        run_infos: list[dict[str, Any]] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.df, self.regime, self.lr, self.criteria = df, regime, lr, criteria
        self.checkpoints, self.run_infos = tuple(checkpoints), run_infos or []
        self.bases = sorted(df["base"].dropna().unique())
        self.parts = [(name, df[df["base"] == name]) for name in self.bases] or [(None, df)]
        planned = table_names(
            several_bases=len(self.bases) > 1,
            seed_sets=bool(criteria.seed_sets),
            predictions=bool(criteria.predictions),
            item_frontier=regime is not None and has_item_frontier(df, self.run_infos, regime),
            policy_kl="policy_kl" in df and bool(np.isfinite(pd.to_numeric(df["policy_kl"], errors="coerce")).any()),
        )
        unknown = set(names or ()) - set(
            table_names(several_bases=True, seed_sets=True, predictions=True, item_frontier=True, policy_kl=True)
        )
        if unknown:
            raise ValueError(f"unknown tables {sorted(unknown)}")
        #: The tables of this study: ``names`` as given (the workflow's plan, :mod:`ktos.study.plan.outputs`), else
        #: those the trajectory table and records can make.
        self.names = list(planned if names is None else names)
        self._known = {*planned, *self.names}
        self._done: dict[str, pd.DataFrame] = {}
        self._part_done: dict[tuple[int, str], Any] = {}

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._known:
            raise KeyError(name)
        if name not in self._done:
            if name in ("best_checkpoint", "frontier"):
                assert self.regime is not None
                self._done.update(frontier_tables(self.df, self.run_infos, self.regime))
            elif name == CURVE_FRONTIER_TABLE:
                assert self.regime is not None
                self._done[name] = curve_frontier_table(self.df, self.run_infos, self.regime)
            else:
                self._done[name] = self._compute(name)
        return self._done[name]

    def _part(self, i: int, name: str) -> Any:
        """Table ``name`` (or ``_cp``, the trajectory checkpoints) of the ``i``-th base's runs."""
        key = (i, name)
        if key not in self._part_done:
            self._part_done[key] = self._one_part(i, name)
        return self._part_done[key]

    def _one_part(self, i: int, name: str) -> Any:
        df, criteria, regime, lr = self.parts[i][1], self.criteria, self.regime, self.lr
        if name == "runs":
            return run_summary(df, criteria)
        if name == "cells":
            return cell_summary(df, self._part(i, "runs"), criteria)
        if name == "paired":
            return paired_table(self._part(i, "runs"), criteria)
        if name == "matched_kl":
            return matched_kl(self._part(i, "runs"))
        if name == "checkpoints":
            return checkpoint_table(df, self.checkpoints)
        if name == "kl_ratio":
            return kl_ratio_over_time(df, regime, lr) if regime is not None and lr is not None else pd.DataFrame()
        if name == "_cp":
            cp = trajectory_checkpoints(df, regime) if regime is not None else None
            return cp if cp is not None and len(cp.methods) > 1 else None
        if name == "envelope":
            cp = self._part(i, "_cp")
            return envelope_table(cp) if cp is not None else pd.DataFrame(columns=ENVELOPE_COLUMNS)
        if name == "early_stopping":
            cp = self._part(i, "_cp")
            return early_stopping_table(cp) if cp is not None else pd.DataFrame(columns=EARLY_STOPPING_COLUMNS)
        if name == "scale":
            return scale_table(self._part(i, "cells"), self._part(i, "runs"))
        if name == "drivers":
            return drivers(self._part(i, "runs"))
        raise KeyError(name)

    def _compute(self, name: str) -> pd.DataFrame:
        if name == "drivers" and len(self.bases) > 1:  # the runs of every base, with the base from the table
            return drivers(self["runs"])
        if name in PER_BASE:
            if not self.bases:  # a table from before bases were recorded
                return self._part(0, name)
            tables = [(base, self._part(i, name)) for i, (base, _) in enumerate(self.parts)]
            return pd.concat([_with_base(t, base) for base, t in tables if not t.empty] or [tables[0][1]])
        runs, criteria = self["runs"], self.criteria
        recipes: dict[str, Callable[[], pd.DataFrame]] = {
            "size_fit": lambda: size_fit(self["scale"]),
            "size_predictions": lambda: size_predictions(self["scale"]),
            "base_cells": lambda: pooled_cells(runs),
            "base_trends": lambda: pooled_trends(runs, self["cells"], criteria.threshold),
            POLICY_TRENDS_TABLE: lambda: pooled_trends(runs, None, criteria.threshold, kl="policy_kl"),
            "base_paired": lambda: pooled_paired(runs),
            "seed_sets": lambda: seed_set_table(runs, dict(criteria.seed_sets)),
            "predictions_observed": lambda: check_predictions(self["scale"], pd.read_csv(criteria.predictions)),
        }
        return recipes[name]()


@dataclass(frozen=True)
class Study:
    """A study's trajectory table (``df``), its headline cell (``regime``, ``lr``), the analysis settings, and
    every table of it (:class:`StudyTables`), computed once for the tables and the figures."""

    df: pd.DataFrame
    regime: str
    lr: float
    criteria: Criteria
    checkpoints: tuple[int, ...]
    tables: StudyTables

    @property
    def several_bases(self) -> bool:
        """Whether the runs start from two or more base models."""
        return bool(self.df["base"].dropna().nunique() > 1)


def load_study(
    table_csv: str | Path,
    *,
    regime: str | None = None,
    lr: float | None = None,
    checkpoints: Sequence[int] = (5, 10, 15, 20),
    run_info: str | Path | None = None,
    names: Sequence[str] | None = None,
    **criteria: Any,
) -> Study:
    """Read the tidy trajectory table, pick the headline cell (``regime``, ``lr``; default: the first regime and
    the learning rate with the most runs) and build every table; ``criteria`` are
    :class:`~ktos.study.readings.analysis.Criteria`'s fields (threshold, window, margin, phase_end, beta, search_steps,
    arms). ``run_info``: the runs' records (``ktos extract-kl --run-info``), for the tables that need each
    held-out item's outcome. ``names``: the tables to make (default: every one the table and records can)."""
    df = read_table(table_csv)
    regime, lr = headline(df, regime, lr)
    settings = Criteria(**criteria)
    infos = read_run_infos(str(run_info)) if run_info else None
    tables = StudyTables(
        df, regime=regime, lr=lr, criteria=settings, checkpoints=checkpoints, run_infos=infos, names=names
    )
    return Study(df, regime, lr, settings, tuple(checkpoints), tables)
