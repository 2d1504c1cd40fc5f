"""How much of each training batch is padding, and how much length bucketing could remove.

The batches are the trainer's own: ``KTOSTrainer``'s data loader over a training set (TRL's tokenisation and
truncation, the KL pairs, the file order the balance stage wrote, which the trainer keeps). For the completion
rows and the KL rows, each batch is a ``B x W`` tensor (``W`` its longest row) of which ``sum(mask)`` tokens
are real. Padding share: ``1 - real / (B W)`` over all batches, the share of the model's token positions spent
on padding (a position's cost taken as equal, attention's quadratic term left out).

Bucketing: the rows of every ``--window`` consecutive batches sorted by length and cut into batches again, the
least padding an order-changing sampler could reach inside such a window. It changes which rows share a batch,
and so which completions make each prompt's KL pair: another estimate of the KL term, not the same training.

    python benchmarks/padding.py                                   # the embedded default (run snakemake first)
    python benchmarks/padding.py --data DIR --model NAME_OR_PATH --batch 16 --max-length 1024
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch

from ktos import KTOSConfig, KTOSTrainer, compat, load_feedback, load_model_and_tokenizer


def lengths_per_batch(trainer: KTOSTrainer, kind: str) -> list[list[int]]:
    """The real-token count of each row of each batch of ``trainer``'s training data loader (``kind``:
    ``"completion"`` or ``"KL"``)."""
    return [compat.sequence(batch, kind)[1].sum(dim=1).tolist() for batch in trainer.get_train_dataloader()]


def padded_positions(batches: list[list[int]]) -> int:
    """Token positions of right-padded batches: each batch's rows times its longest row."""
    return sum(len(rows) * max(rows) for rows in batches)


def bucketed(batches: list[list[int]], window: int) -> list[list[int]]:
    """Each ``window`` consecutive batches' rows sorted by length and cut into batches of the same sizes."""
    out: list[list[int]] = []
    for start in range(0, len(batches), window):
        group = batches[start : start + window]
        rows = sorted(length for batch in group for length in batch)
        for batch in group:
            out.append(rows[: len(batch)])
            rows = rows[len(batch) :]
    return out


def report(batches: list[list[int]], window: int) -> dict[str, float]:
    """Real tokens, positions as batched and after bucketing, and the padding shares."""
    real = sum(sum(rows) for rows in batches)
    as_batched, after = padded_positions(batches), padded_positions(bucketed(batches, window))
    return {"real": real, "positions": as_batched, "padding": 1 - real / as_batched,
            "bucketed_positions": after, "bucketed_padding": 1 - real / after,
            "positions_saved": 1 - after / as_batched}  # fmt: skip


def percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="results/data/default/balanced/seed15", help="a training set (ktos data dir)")
    parser.add_argument("--model", default="results/reference/bases/0.09M_seed0", help="its tokenizer's model")
    parser.add_argument("--batch", type=int, default=8, help="per-device batch (the embedded default's)")
    parser.add_argument("--max-length", type=int, default=1024, help="TRL's max_length")
    parser.add_argument("--window", type=int, default=8, help="batches a bucketing sampler may reorder together")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not Path(args.data).exists():
        raise SystemExit(f"{args.data} not found: run `snakemake --cores 2` first, or give --data")
    model, tokenizer = load_model_and_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        config = KTOSConfig(output_dir=tmp, per_device_train_batch_size=args.batch, max_length=args.max_length,
                            report_to="none", use_cpu=not torch.cuda.is_available())  # fmt: skip
        trainer = KTOSTrainer(model=model, args=config, train_dataset=load_feedback(args.data),
                              processing_class=tokenizer)  # fmt: skip
        results = {kind: report(lengths_per_batch(trainer, kind), args.window) for kind in ("completion", "KL")}
    print(f"{args.data}: batches of {args.batch}, max_length {args.max_length}, bucketing window {args.window}")
    print("| rows | real tokens | positions | padding | bucketed positions | bucketed padding | positions saved |")
    print("|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        print(f"| {kind} | {r['real']:,} | {r['positions']:,} | {percent(r['padding'])} | {r['bucketed_positions']:,} "
              f"| {percent(r['bucketed_padding'])} | {percent(r['positions_saved'])} |")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
