"""Step-time overhead of KTO-S over KTO, measured side by side in one process.

The same tiny model and data; KTO and KTO-S training steps (forward, loss, backward, optimizer step)
are interleaved, alternating which goes first, so both see the same machine state. Prints the
median step time of each and the ratio KTO-S / KTO (goal: <= 1.02), plus the same for the loss
function alone.

    python benchmarks/step_overhead.py [--steps 60] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from datasets import Dataset

from ktos import KTOSConfig, KTOSTrainer
from ktos.losses import kto_loss
from ktos.toy.tiny import build_tiny_model, build_tiny_tokenizer

log = logging.getLogger("step_overhead")


def toy_data(n: int, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randrange(100), rng.randrange(100)
        label = i % 4 != 0
        rows.append({"prompt": f"Q: {a}+{b}=", "completion": f" {a + b if label else a + b + 1}", "label": label})
    return Dataset.from_list(rows)


def make_trainer(use_kto_s: bool, data: Dataset, batch_size: int, steps: int, out: str) -> KTOSTrainer:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=0)
    args = KTOSConfig(
        output_dir=out,
        use_kto_s=use_kto_s,
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        gradient_checkpointing=False,
        save_strategy="no",
        disable_tqdm=True,
        learning_rate=1e-4,
        beta=0.2,
    )
    reference = build_tiny_model(tokenizer, seed=0)
    trainer = KTOSTrainer(model=model, ref_model=reference, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); training_step divides by it
    return trainer


def time_steps(trainers: dict[str, KTOSTrainer], steps: int) -> dict[str, list[float]]:
    batches = {name: list(t.get_train_dataloader()) for name, t in trainers.items()}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    names = list(trainers)
    for i in range(steps):
        for name in names if i % 2 == 0 else names[::-1]:
            trainer = trainers[name]
            batch = batches[name][i % len(batches[name])]
            start = time.perf_counter()
            trainer.training_step(trainer.model, batch)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
            times[name].append(time.perf_counter() - start)
    return times


def time_loss(batch: int, repeats: int) -> dict[str, list[float]]:
    g = torch.Generator().manual_seed(0)
    inputs = [-10 * torch.rand(n, generator=g) for n in (batch * 3 // 4, batch // 4, batch)] * 2
    times: dict[str, list[float]] = {"kto": [], "kto_s": []}
    for i in range(repeats):
        for name in ("kto", "kto_s") if i % 2 == 0 else ("kto_s", "kto"):
            start = time.perf_counter()
            kto_loss(*inputs, beta=0.2, sign_correction=name == "kto_s")
            times[name].append(time.perf_counter() - start)
    return times


def report(title: str, times: dict[str, list[float]], warmup: int) -> float:
    kto, kto_s = (statistics.median(times[m][warmup:]) for m in ("kto", "kto_s"))
    ratio = kto_s / kto
    print(f"{title}: median KTO {kto * 1e3:.3f} ms, KTO-S {kto_s * 1e3:.3f} ms, ratio KTO-S/KTO = {ratio:.3f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    data = toy_data(args.batch_size * 16)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            "kto": make_trainer(False, data, args.batch_size, args.steps, f"{tmp}/kto"),
            "kto_s": make_trainer(True, data, args.batch_size, args.steps, f"{tmp}/kto_s"),
        }
        step_times = time_steps(trainers, args.steps)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"{args.steps} steps each"
    )
    ratio = report("training step", step_times, warmup=5)
    report("loss function only", time_loss(args.batch_size, 2000), warmup=100)
    print(f"goal KTO-S/KTO <= 1.02: {'met' if ratio <= 1.02 else 'NOT met'}")


if __name__ == "__main__":
    main()
