"""The embedded default's per-run training time: as its jobs train now, and with faster settings, side by side.

On the embedded default's inputs (the 0.09M base model, a balanced training set, the eval split and the
held-out items, as `snakemake` writes them), the same KTO-S run is trained through ``ktos train``'s own
code path (``ktos.runs.run.train``, in this process, as a training job trains its runs) in each of
:data:`WAYS`, the order rotating every repeat, ``--repeats`` times. The settings are the default study's
training jobs' own file (``results/train_configs/main/<job>.yaml``): 150 steps, the KL probe every 5 steps, task
accuracy every 10, a checkpoint every 50. Prints each way's median per-run training time (``elapsed_s`` in
run_info.json: the optimizer steps with the probe, the step-wise accuracy and the checkpoints), its speed-up over
the ``before`` way (the jobs' settings until config/config.yaml turned gradient checkpointing off and fused
forward passes on), and the largest difference between each trajectory and the jobs' (loss, kl, probe KL),
which must agree to floating-point order.

    python benchmarks/default_run.py [--root /path/with/results] [--repeats 3] [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from ktos.runs.command import parse_train_args
from ktos.runs.files import RUN_INFO_FILE, TRAJECTORY_FILE, read_trajectory
from ktos.runs.run import train
from ktos.toy.quality import TASK

#: The ways to train, by name: flags added to the jobs' own settings. ``jobs`` trains as the default study's jobs
#: do now (config/config.yaml: gradient checkpointing off, fused forward passes); ``before`` as they did until
#: config/config.yaml set those two (TRL's gradient checkpointing on, ktos's unfused calls); ``jobs_compiled`` as
#: the jobs with ``torch.compile`` (TRL's ``torch_compile``; compiling counted in the time). Gradient checkpointing
#: recomputes each layer's forward in the backward pass: the same numbers, more time. Compiled kernels may sum in
#: another order: the same numbers to rounding, not bitwise.
WAYS: dict[str, list[str]] = {
    "before": ["--gradient_checkpointing", "true", "--fuse_forward_passes", "false"],
    "checkpointing_off": ["--gradient_checkpointing", "false", "--fuse_forward_passes", "false"],
    "fused": ["--gradient_checkpointing", "true", "--fuse_forward_passes", "true"],
    "jobs": [],
    "jobs_compiled": ["--torch_compile", "true"],
    # where the time goes: the jobs without the step-wise task accuracy (a step past the end), then without the probe
    "no_step_accuracy": ["--quality_steps", "100000"],
    "steps_only": ["--quality_steps", "100000", "--kl_probe_size", "0"],
}
#: The ``before`` way: the ratios are its time over each way's.
BASELINE = "before"
#: The base the runs start from: the default study's first committed base.
BASE = "results/reference/bases/0.09M_seed0"


def job_settings(root: Path) -> Path:
    """The default study's training-job settings file (``results/train_configs/main/<job>.yaml``, written by
    ``snakemake`` from config/config.yaml): every ``ktos train`` argument but the paths and the run names."""
    found = sorted((root / "results/train_configs/main").glob("*.yaml"))
    if not found:
        raise SystemExit(f"{root}/results/train_configs/main/ is empty: run `snakemake --cores 2` first")
    return found[0]


def run_argv(root: Path, data: Path, out: Path, *, seed: int, steps: int, extra: list[str]) -> list[str]:
    """``ktos train`` arguments of one default KTO-S run into ``out``: the jobs' settings file, the paths and
    run-name settings a job adds, then the flags ``extra`` (flags win over the file)."""
    train_dir = data / f"balanced/seed{seed}"
    return [
        "--config", str(job_settings(root)), "--output_dir", str(out),
        "--model_name_or_path", str(root / BASE),
        "--train_data", str(train_dir), "--eval_data", str(data / "split/eval"), "--heldout",
        str(data / "synthetic/heldout.jsonl"),
        "--weights_from", str(train_dir / "manifest.json"), "--save_model", "false",
        "--loss_type", "kto_s", "--learning_rate", "0.00027", "--seed", str(seed),
        "--max_steps", str(steps), *extra,
    ]  # fmt: skip


def one_run(argv: list[str]) -> tuple[float, list[dict]]:
    """Train one run; its training seconds (run_info's ``elapsed_s``) and trajectory rows."""
    out = Path(parse_train_args(argv)[3].output_dir)
    train(*parse_train_args(argv), task=TASK)
    return json.loads((out / RUN_INFO_FILE).read_text())["elapsed_s"], read_trajectory(out / TRAJECTORY_FILE)


def largest_differences(a: list[dict], b: list[dict]) -> dict[str, float]:
    """Largest absolute difference per key between two trajectories, step by step."""
    keys = ("loss", "kl", "probe_kl")
    return {
        k: max((abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) if k in x and k in y), default=float("nan"))
        for k in keys
    }  # fmt: skip  (NaN: a way that does not measure the key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="directory holding results/ of the default pipeline")
    parser.add_argument("--data", help="its data directory (default: ROOT/results/data/default)")
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated ways to time (the baseline always)")
    parser.add_argument("--out", default="results/benchmarks/default_run")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a training job's share of a core)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    data = Path(args.data) if args.data else root / "results/data/default"
    if not (data / "split/eval").is_dir():
        raise SystemExit(f"{data}/split/eval not found: run `snakemake --cores 2` first")
    names = [BASELINE, *[w for w in args.ways.split(",") if w != BASELINE]]
    seconds: dict[str, list[float]] = {way: [] for way in names}
    differences: dict[str, list[dict[str, float]]] = {way: [] for way in names}
    for repeat in range(args.repeats):
        rows = {}
        for way in names[repeat % len(names) :] + names[: repeat % len(names)]:
            out = Path(args.out) / f"{way}{repeat}"
            argv = run_argv(root, data, out, seed=args.seed, steps=args.steps, extra=WAYS[way])
            elapsed, rows[way] = one_run(argv)
            seconds[way].append(elapsed)
        for way in names:
            differences[way].append(largest_differences(rows.get("jobs", rows[BASELINE]), rows[way]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, {args.repeats} repeats")
    print(f"settings: {job_settings(root)}, plus each way's flags: { {w: WAYS[w] for w in names} }")
    print("| way | median s per run | runs (s) | before / way | largest difference to the jobs' (loss, kl, probe_kl) |")
    print("|---|---|---|---|---|")
    base = statistics.median(seconds[BASELINE])
    for way in names:
        median = statistics.median(seconds[way])
        runs = ", ".join(f"{s:.2f}" for s in seconds[way])
        diff = ", ".join(f"{max(d[k] for d in differences[way]):.1e}" for k in ("loss", "kl", "probe_kl"))
        print(f"| {way} | {median:.2f} | {runs} | {base / median:.3f}x | {diff} |")


if __name__ == "__main__":
    main()
