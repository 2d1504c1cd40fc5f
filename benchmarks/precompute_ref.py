"""Precomputed reference log-probabilities against the reference model's forward passes, side by side.

On the embedded default (its pretrained base model and data, written by `snakemake`), the same KTO-S run is
trained twice in one process, once recomputing the reference model's log-probs every step (TRL's default:
two extra forward passes per step) and once reading them from TRL's one-off precomputation
(``precompute_ref_log_probs``). Prints the training steps per second of each, their ratio, the one-off
precomputation time, and the largest difference between the two trajectories (loss, logged kl, probe KL),
which must agree: the batch order and the mismatched KL pairs are the same in both (the trainer reads the
training set in file order; with a shuffled sampler the precomputed values would belong to other pairs).

    python benchmarks/precompute_ref.py [--steps 150] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from ktos import KTOSConfig, KTOSTrainer
from ktos.data import load_feedback
from ktos.models import load_model_and_tokenizer
from ktos.probe import KLProbe, ProbeCallback
from ktos.runs.files import read_trajectory
from ktos.runs.trajectory import TrajectoryCallback

log = logging.getLogger("precompute_ref")


def run(
    base: Path, train: Path, eval_dir: Path, out: Path, *, precompute: bool, steps: int
) -> tuple[float, float, list[dict]]:
    """One run: (precomputation seconds, training seconds, trajectory rows)."""
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(str(base))
    args = KTOSConfig(
        output_dir=str(out), use_kto_s=True, beta=0.2, learning_rate=1e-4, lr_scheduler_type="constant_with_warmup",
        warmup_steps=5, max_steps=steps, per_device_train_batch_size=8, save_strategy="no", disable_tqdm=True,
        report_to="none", precompute_ref_log_probs=precompute, kl_probe_size=64, kl_probe_steps=5,
    )  # fmt: skip
    started = time.perf_counter()
    trainer = KTOSTrainer(model=model, args=args, train_dataset=load_feedback(str(train)), processing_class=tokenizer)
    setup = time.perf_counter() - started
    probe = KLProbe(trainer, load_feedback(str(eval_dir)), 64)
    trainer.add_callback(ProbeCallback(trainer, probe, every=5))
    trainer.add_callback(TrajectoryCallback(out))
    started = time.perf_counter()
    trainer.train()
    return setup, time.perf_counter() - started, read_trajectory(out / "trajectory.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="results/reference/bases/0.09M_seed0")
    parser.add_argument("--train", default="results/data/default/balanced/seed15")
    parser.add_argument("--eval", default="results/data/default/split/eval")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="results/benchmarks/precompute_ref")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if not Path(args.base).is_dir():
        raise SystemExit(f"{args.base} not found: run `snakemake --cores 2` first (it writes the base model and data)")
    times: dict[bool, list[float]] = {False: [], True: []}
    setups: dict[bool, list[float]] = {False: [], True: []}
    rows: dict[bool, list[dict]] = {}
    for repeat in range(args.repeats):
        for precompute in (repeat % 2 == 1, repeat % 2 == 0):  # alternate which goes first
            out = Path(args.out) / f"{'pre' if precompute else 'ref'}{repeat}"
            setup, seconds, rows[precompute] = run(Path(args.base), Path(args.train), Path(args.eval), out,
                                                   precompute=precompute, steps=args.steps)  # fmt: skip
            times[precompute].append(seconds)
            setups[precompute].append(setup)
    rate = {k: args.steps / float(np.median(v)) for k, v in times.items()}
    diffs = {
        key: max(abs(a[key] - b[key]) for a, b in zip(rows[False], rows[True], strict=True) if key in a and key in b)
        for key in ("loss", "kl", "probe_kl")
    }
    print(f"steps/s, reference model each step:  {rate[False]:.2f}  (median of {args.repeats}, {args.steps} steps)")
    print(f"steps/s, precomputed reference:      {rate[True]:.2f}")
    print(f"speed-up:                            {rate[True] / rate[False]:.3f}x")
    print(
        f"trainer set-up incl. precomputation: {np.median(setups[True]):.2f} s (without: "
        f"{np.median(setups[False]):.2f} s)"
    )
    print("largest |difference| between the trajectories: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
