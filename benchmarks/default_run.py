"""The embedded default's per-run training time: as its jobs train now, and with faster settings, side by side.

On the embedded default's inputs (the 0.09M base model, a balanced training set, the eval split and the
held-out items, as `snakemake` writes them), the same KTO-S run is trained through ``ktos train``'s own
code path (``ktos.study.run.train``, in this process, as a training job trains its runs) in each of
:data:`WAYS`, the order rotating every repeat, ``--repeats`` times. The flags are those of the default
study's training jobs (``snakemake -n -p`` prints them): 150 steps, the KL probe every 5 steps, task
accuracy every 10, a checkpoint every 50. Prints each way's median per-run training time (``elapsed_s``
in run_info.json: the optimizer steps with the probe, the step-wise accuracy and the checkpoints), its
ratio to the jobs' way, and the largest difference between each trajectory and the jobs' (loss, kl,
probe KL), which must agree to floating-point order.

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

from ktos.cli import parse_train_args
from ktos.study.run import train
from ktos.study.rundir import RUN_INFO_FILE, TRAJECTORY_FILE, read_trajectory

log = logging.getLogger("default_run")

#: The ways to train, by name: flags added to the jobs' own. Gradient checkpointing (TRL's default, which the
#: jobs keep) recomputes each layer's forward in the backward: the same numbers, more time.
WAYS: dict[str, list[str]] = {
    "jobs": [],
    "fused": ["--fuse_forward_passes", "true"],
    "no_checkpointing": ["--gradient_checkpointing", "false"],
    "fused+no_checkpointing": ["--fuse_forward_passes", "true", "--gradient_checkpointing", "false"],
}

#: The default study's training-job flags (config/config.yaml through workflow/rules/common.smk), less the paths.
JOB_FLAGS = (
    "--save_model false --save_strategy steps --beta 0.2 --per_device_train_batch_size 8 "
    "--lr_scheduler_type constant_with_warmup --warmup_steps 5 --optim adamw_torch --max_grad_norm 1.0 "
    "--save_steps 50 --bf16 false --kl_probe_size 64 --kl_probe_steps 5 --precompute_ref_log_probs false "
    "--regime constant_b0.2 --report_to none --use_kto_s true --learning_rate 0.00027"
).split()


def run_argv(root: Path, out: Path, *, seed: int, steps: int, extra: list[str]) -> list[str]:
    """``ktos train`` arguments of one default run into ``out``, with the flags ``extra``."""
    train_dir = root / f"results/data/balanced/seed{seed}"
    quality_steps = [str(s) for s in range(10, steps, 10)]  # the default's task accuracy every 10 steps
    return [
        "--output_dir", str(out), "--model_name_or_path", str(root / "results/models/base_0.09M"),
        "--train_data", str(train_dir), "--eval_data", str(root / "results/data/split/eval"),
        "--weights_from", str(train_dir / "manifest.json"),
        "--heldout", str(root / "results/data/synthetic/heldout.jsonl"), "--seed", str(seed),
        "--max_steps", str(steps), *JOB_FLAGS, *extra,
    ] + (["--quality_steps", *quality_steps] if quality_steps else [])  # fmt: skip


def one_run(argv: list[str]) -> tuple[float, list[dict]]:
    """Train one run; its training seconds (run_info's ``elapsed_s``) and trajectory rows."""
    out = Path(parse_train_args(argv)[3].output_dir)
    train(*parse_train_args(argv))
    return json.loads((out / RUN_INFO_FILE).read_text())["elapsed_s"], read_trajectory(out / TRAJECTORY_FILE)


def largest_differences(a: list[dict], b: list[dict]) -> dict[str, float]:
    """Largest absolute difference per key between two trajectories, step by step."""
    keys = ("loss", "kl", "probe_kl")
    return {k: max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) if k in x and k in y) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="directory holding results/ of the default pipeline")
    parser.add_argument("--out", default="results/benchmarks/default_run")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a training job's share of a core)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    if not (root / "results/models/base_0.09M").is_dir():
        raise SystemExit(f"{root}/results/models/base_0.09M not found: run `snakemake --cores 2` first")
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    differences: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    names = list(WAYS)
    for repeat in range(args.repeats):
        rows = {}
        for way in names[repeat % len(names) :] + names[: repeat % len(names)]:
            argv = run_argv(root, Path(args.out) / f"{way}{repeat}", seed=args.seed, steps=args.steps, extra=WAYS[way])
            elapsed, rows[way] = one_run(argv)
            seconds[way].append(elapsed)
        for way in names:
            differences[way].append(largest_differences(rows["jobs"], rows[way]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, {args.repeats} repeats")
    print("| way | median s per run | runs (s) | jobs / way | largest difference to the jobs' (loss, kl, probe_kl) |")
    print("|---|---|---|---|---|")
    base = statistics.median(seconds["jobs"])
    for way in names:
        median = statistics.median(seconds[way])
        runs = ", ".join(f"{s:.2f}" for s in seconds[way])
        diff = ", ".join(f"{max(d[k] for d in differences[way]):.1e}" for k in ("loss", "kl", "probe_kl"))
        print(f"| {way} | {median:.2f} | {runs} | {base / median:.3f}x | {diff} |")


if __name__ == "__main__":
    main()
