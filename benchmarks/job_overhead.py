"""Start-up and evaluation overhead of the training jobs of a finished study, from their benchmark files.

For every training job: its wall time (Snakemake's benchmark TSV, ``s``) and the training time of its runs
(``elapsed_s`` in each run's run_info.json: the optimizer steps with the probe and the step-wise task
accuracy). Overhead is the rest: imports, model and data loading, the trainer's set-up and the final
evaluation. Prints per job and in total the overhead as a fraction of training time (goal: < 25%).

    python benchmarks/job_overhead.py [--study main]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd


def job_runs(log_text: str) -> list[Path]:
    """The run directories a training job's log names (``run i of n: DIR``), or its single --output_dir run."""
    return [Path(m) for m in re.findall(r"run \d+ of \d+: (\S+)", log_text)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="main")
    parser.add_argument("--root", default=".")
    args = parser.parse_args()
    root = Path(args.root)
    rows = []
    for tsv in sorted((root / "results/benchmarks/train" / args.study).glob("*.tsv")):
        wall = float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
        log = (root / "results/logs/train" / args.study / f"{tsv.stem}.log").read_text()
        runs = job_runs(log)
        train = sum(json.loads((root / r / "run_info.json").read_text())["elapsed_s"] for r in runs)
        rows.append({"job": tsv.stem, "runs": len(runs), "wall_s": wall, "train_s": train, "overhead_s": wall - train})
    table = pd.DataFrame(rows)
    if table.empty:
        raise SystemExit(f"no benchmark files under results/benchmarks/train/{args.study}: run the study first")
    table["overhead_fraction"] = table["overhead_s"] / table["train_s"]
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    total = table[["wall_s", "train_s", "overhead_s"]].sum()
    print(f"\nall jobs: wall {total['wall_s']:.1f} s, training {total['train_s']:.1f} s, overhead "
          f"{total['overhead_s']:.1f} s = {total['overhead_s'] / total['train_s']:.1%} of training time")  # fmt: skip


if __name__ == "__main__":
    main()
