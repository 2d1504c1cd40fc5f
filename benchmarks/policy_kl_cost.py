"""Cost of the policy KL (ktos.policy_kl), side by side with a training step, in one process.

The same tiny model and data: one trainer with the policy KL on. Times its training steps (forward, loss,
backward, optimizer step, through ``training_step`` and the optimizer) and its measurements (``PolicyKL.measure``),
interleaved so both see the same machine state, and prints the median of each and their ratio: the extra time of a
step at which the policy KL is measured, in training steps (divide by ``policy_kl_steps`` for the mean overhead).

    python benchmarks/policy_kl_cost.py [--repeats 10] [--size 16] [--max-new-tokens 32] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from step_overhead import toy_data  # the same toy feedback as the step-overhead benchmark

from ktos import KTOSConfig, KTOSTrainer
from ktos.toy.tiny import build_tiny_model, build_tiny_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--size", type=int, default=16, help="policy_kl_size")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    opts = parser.parse_args()
    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        args = KTOSConfig(
            output_dir=tmp, per_device_train_batch_size=opts.batch_size, per_device_eval_batch_size=opts.size,
            max_length=64, gradient_checkpointing=False, save_strategy="no", disable_tqdm=True, report_to="none",
            kl_probe_size=0, log_update_norm=False, policy_kl_size=opts.size,
            policy_kl_max_new_tokens=opts.max_new_tokens, max_steps=opts.repeats,
        )  # fmt: skip
        trainer = KTOSTrainer(
            model=build_tiny_model(tokenizer), ref_model=build_tiny_model(tokenizer), args=args,
            processing_class=tokenizer, train_dataset=toy_data(opts.batch_size * opts.repeats),
            eval_dataset=toy_data(opts.size, seed=1),
        )  # fmt: skip
        trainer.create_optimizer_and_scheduler(num_training_steps=opts.repeats)
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); training_step divides by it
        batches = iter(trainer.get_train_dataloader())
        step_times, measure_times, tokens = [], [], []
        for _ in range(opts.repeats):
            batch = next(batches)
            start = time.perf_counter()
            trainer.training_step(trainer.model, batch)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
            step_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            measured = trainer.policy_kl.measure()
            measure_times.append(time.perf_counter() - start)
            tokens.append(measured["policy_kl_tokens"])
    step, measure = statistics.median(step_times), statistics.median(measure_times)
    print(
        f"device {trainer.accelerator.device}, policy_kl_size {opts.size}, max_new_tokens {opts.max_new_tokens}, "
        f"mean sampled length {statistics.mean(tokens):.1f}, train batch {opts.batch_size}"
    )
    print(f"training step without policy KL: {step * 1e3:8.1f} ms (median of {opts.repeats})")
    print(f"training step with policy KL:    {(step + measure) * 1e3:8.1f} ms (step + one measurement)")
    print(f"ratio with / without:            {(step + measure) / step:8.2f}")


if __name__ == "__main__":
    main()
