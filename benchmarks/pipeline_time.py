"""The whole default pipeline's wall time from an empty ``results/``, and where it goes, in one run.

Copies the committed tree (``git archive HEAD``: the workflow, the library and the committed bases, no
``results/`` of its own but the reference copies) into a temporary directory, runs ``snakemake --cores N`` there
(the embedded default: the headline cell over its 5 committed bases), and reads every job's Snakemake benchmark
file and every run's ``run_info.json``. Prints the wall time and, per stage, the summed job seconds; the training
jobs' seconds are split into the runs' own training time (``elapsed_s``: optimizer steps, the probe and the
step-wise task accuracy) and the rest (start-up, loading, the final evaluation). Targets (issue: a session's
budget): the default pipeline within 5 minutes on a 2-core machine.

    python benchmarks/pipeline_time.py [--cores 2] [--configfile FILE] [--out results/reference/perf/FILE.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

log = logging.getLogger("pipeline_time")
#: Job benchmark files by stage (a path under results/benchmarks/ -> stage).
STAGES: tuple[tuple[str, str], ...] = (
    ("train/", "training jobs"),
    ("pretrain", "pretraining"),
    ("draw_figures", "figures"),
    ("write_tables", "tables"),
    ("extract_kl", "trajectory table"),
)


def stage(path: Path) -> str:
    """The stage of a job's benchmark file (data preparation when no other matches)."""
    return next((name for key, name in STAGES if key in path.as_posix()), "data")


def run_pipeline(tree: Path, cores: int, configfile: str | None) -> float:
    """Run the workflow in ``tree``; return its wall seconds."""
    argv = ["snakemake", "--cores", str(cores)] + (["--configfile", configfile] if configfile else [])
    started = time.monotonic()
    done = subprocess.run(argv, cwd=tree, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"snakemake failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def costs(tree: Path) -> pd.DataFrame:
    """Summed job seconds per stage, and the runs' own training seconds."""
    bench = tree / "results/benchmarks"
    rows = [
        {"stage": stage(tsv.relative_to(bench)), "s": float(pd.read_csv(tsv, sep="\t")["s"].iat[0])}
        for tsv in bench.rglob("*.tsv")
    ]
    table = pd.DataFrame(rows).groupby("stage")["s"].agg(["count", "sum"]).rename(columns={"count": "jobs"})
    runs = [json.loads(p.read_text()) for p in (tree / "results/runs").rglob("run_info.json")]
    trained = sum(r["elapsed_s"] or 0.0 for r in runs)  # None: a run still training
    table.loc["of which the runs' training (elapsed_s)", ["jobs", "sum"]] = [len(runs), trained]
    return table.reset_index()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--configfile")
    parser.add_argument("--out", help="also write the report to this Markdown file")
    args = parser.parse_args()
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        archive = subprocess.run(["git", "archive", "HEAD"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        log.info("running the pipeline in %s", tree)
        wall = run_pipeline(tree, args.cores, args.configfile)
        table = costs(tree)
    lines = [
        f"# The default pipeline from an empty results/ (benchmarks/pipeline_time.py at {revision}, "
        f"{os.cpu_count()}-core CPU, --cores {args.cores}{', ' + args.configfile if args.configfile else ''})",
        "",
        f"torch {torch.__version__}. Wall time: **{wall:.0f} s** ({wall / 60:.1f} min; target 5 min).",
        "",
        "| stage | jobs | job seconds, summed |",
        "|---|---|---|",
        *(f"| {r.stage} | {int(r.jobs)} | {r.sum:.1f} |" for r in table.itertuples(index=False)),
        "",
        "Job seconds add up over the cores; the runs' training time (optimizer steps, the probe, the step-wise task "
        "accuracy) is part of the training jobs' seconds, and the rest of those is start-up, loading and the final "
        "evaluation (benchmarks/default_run.py splits a run's own time).",
    ]
    text = "\n".join(lines) + "\n"
    log.info("%s", text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
