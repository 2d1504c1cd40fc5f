"""Pretraining throughput of ``ktos pretrain-base`` at each base-model size: tokens/s and model-FLOP utilisation.

For each size of :data:`ktos.toy.pretrain.SIZES` asked for, :func:`ktos.toy.pretrain.pretrain_base` (the code
path of ``ktos pretrain-base`` and of the workflow's ``pretrain_base`` rule) trains a fresh base model for
``--steps`` steps of ``--batch-size`` corpus lines on the toy task's corpus (written by
:func:`ktos.toy.task.synth_data` into a temporary directory, or ``--corpus``). From its ``pretrain_log.json``:
the loop's wall-clock seconds, the non-padding tokens trained on and their rate, and the model-FLOP
utilisation ``6 N T / seconds / peak`` (``N`` parameters, ``T`` tokens; forward and backward; attention's
``O(T^2)`` term left out; the peak from ``throughput.PEAK_FLOPS`` at bf16 on a GPU, where pretraining runs
under bf16 autocast; none on a CPU). The first steps (allocation, kernel selection) are in the time: give a
GPU enough steps that they do not count.

    python benchmarks/pretrain_throughput.py                       # CPU: 0.09M, 0.3M, 1M, 60 steps of 64
    python benchmarks/pretrain_throughput.py --sizes 0.09M,2.6M,21M,105M --steps 300 --batch-size 256 \\
        --out results/reference/perf                               # a GPU, as config/scale_gpu.yaml pretrains
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from throughput import peak_flops

from ktos.provenance import ktos_revision
from ktos.toy.pretrain import SIZES, pretrain_base
from ktos.toy.task import synth_data


def measure(corpus: Path, size: str, args: argparse.Namespace, out: Path) -> dict:
    """One pretraining of ``size`` for ``args.steps`` steps; its row of the table."""
    record = pretrain_base(corpus, out, size=size, steps=args.steps, batch_size=args.batch_size,
                           device=args.device, num_threads=args.threads)  # fmt: skip
    on_gpu = record["device"] != "cpu"
    peak = peak_flops(record["device"], "bf16", args.peak_tflops) if on_gpu else None
    flops = 6 * record["params"] * record["tokens"]
    return {
        "size": size, "params": record["params"], "device": record["device"], "precision": record["precision"],
        "steps": record["steps"], "batch_size": args.batch_size, "tokens": record["tokens"],
        "seconds": record["seconds"], "tokens_per_s": record["tokens_per_s"],
        "ms_per_step": 1e3 * record["seconds"] / record["steps"],
        "mfu": flops / record["seconds"] / peak if peak else None,
        "final_loss": record["losses"][-1],
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| size | parameters | steps x lines | tokens | ms per step | tokens/s | MFU |", "|" + "---|" * 7]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        lines.append(f"| {r['size']} | {r['params'] / 1e6:.3f}M | {r['steps']} x {r['batch_size']} | {r['tokens']:,} "
                     f"| {r['ms_per_step']:.1f} | {r['tokens_per_s']:,.0f} | {mfu} |")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.09M,0.3M,1M", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64, help="corpus lines per step (the workflow's default)")
    parser.add_argument("--corpus", type=Path, help="one line per example; default: the toy task's corpus")
    parser.add_argument("--device", help="cpu, cuda, ... (default: a GPU when there is one)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the workflow's rule: 1)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's bf16 peak, where PEAK_FLOPS lacks it")
    parser.add_argument("--out", help="directory for the results (JSON and Markdown, named after the device)")
    args = parser.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in args.sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; known: {', '.join(SIZES)}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        if args.corpus is None:
            synth_data(Path(tmp) / "task", seed=0)
        corpus = args.corpus or Path(tmp) / "task" / "corpus.txt"
        rows = [measure(corpus, size, args, Path(tmp) / size) for size in args.sizes]
    header = (f"{rows[0]['device']}, torch {torch.__version__}, {args.threads} threads; ktos pretrain-base, "
              f"{args.batch_size} corpus lines a step, {rows[0]['precision']}")  # fmt: skip
    text = f"{header}\n\n{table(rows)}"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        slug = "".join(c if c.isalnum() else "_" for c in rows[0]["device"]).strip("_")
        stem = f"pretrain_{slug}_b{args.batch_size}_{'_'.join(args.sizes)}".replace(".", "p")
        meta = {"device": rows[0]["device"], "torch": torch.__version__, "ktos": ktos_revision(), "args": vars(args)}
        (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")
        (out / f"{stem}.md").write_text(text + "\n")
        print(f"wrote {out / stem}.json")
    return rows


if __name__ == "__main__":
    main()
