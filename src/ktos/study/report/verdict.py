"""``ktos tables``: every table file of a study and ``verdict.md``, from the tables computed once
(:func:`ktos.study.readings.tables.load_study`) and the verdict's text (:mod:`ktos.study.report.prose`).

:func:`write_tables` writes the tables it is given (the workflow's plan, :mod:`ktos.study.plan.outputs`), one
``<name>.csv`` each, and ``verdict.md``. Standard library, numpy, pandas and scipy only: it runs in the analysis
env, without torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..readings.tables import load_study
from .prose import verdict_markdown

log = logging.getLogger(__name__)


def write_tables(
    table_csv: str | Path,
    out_dir: str | Path,
    *,
    regime: str | None = None,
    lr: float | None = None,
    checkpoints: Sequence[int] = (5, 10, 15, 20),
    run_info: str | Path | None = None,
    names: Sequence[str] | None = None,
    **criteria: Any,
) -> list[Path]:
    """Write the tables ``names`` (default: every one the study can make) and ``verdict.md`` of the study
    :func:`load_study` reads into ``out_dir`` (``ktos tables``; the arguments are :func:`load_study`'s). Returns
    the paths."""
    study = load_study(
        table_csv, regime=regime, lr=lr, checkpoints=checkpoints, run_info=run_info, names=names, **criteria
    )
    tables = study.tables
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in tables.names:
        if tables[name].columns.empty:
            raise RuntimeError(f"table {name} has no columns: it would be written as an empty file")
        path = out / f"{name}.csv"
        tables[name].to_csv(path, index=False)
        paths.append(path)
    text = verdict_markdown(
        tables, methods=set(study.df["method"]), regime=study.regime, lr=study.lr, criteria=study.criteria
    )
    (out / "verdict.md").write_text(text)
    paths.append(out / "verdict.md")
    log.info("wrote %d tables to %s", len(paths), out)
    return paths
