"""Training throughput of KTO, KTO-S and TRL's own KTOTrainer, side by side in one process.

One trainer per variant, all on the same random-init Llama (built offline, no download) and the same
synthetic feedback rows of exactly ``--seq-len`` tokens (prompt, completion and EOS). Their training steps
(forward passes, loss, backward, optimizer step) are interleaved, the order rotating every step, so every
variant sees the same machine state. Per variant, after ``--warmup`` steps: the step time (median, p10,
p90), tokens/s, model-FLOP utilisation, memory and tokens/s relative to TRL's trainer (the first variant).

Variants (``--variants``, comma-separated): a method, ``trl`` (TRL's ``KTOTrainer``), ``kto`` or ``kto_s``
(``KTOSTrainer``), and ``+``-joined options: ``fused`` (``fuse_forward_passes``), ``shared`` (TRL < 1.6, with
``fused``: the policy scores the completions and the KL pairs in one graded call, KL rows detached, the
alternative to its separate no-grad KL call), ``compile`` (``torch_compile``: the reference model compiled by
the trainer, the policy as ``Trainer.train`` would), ``eager``, ``sdpa`` or ``flash`` (the attention
implementation instead of ``--attn``; ``flash`` is ``flash_attention_2``, which needs the flash-attn package) and
``b<N>`` (micro-batch ``N`` rows instead of ``--batch``: what a larger micro-batch with less gradient accumulation
buys). ``kto_s+fused+b32`` is KTO-S, fused, 32 rows.

Tokens per step ``T``: the completion sequences' tokens (attention mask), micro-batch x seq-len. Model FLOPs per
step: ``6 N T`` for the policy's graded pass (forward and backward) plus ``2 N T`` for each no-grad
forward over ``T`` tokens: the policy's on the KL pairs and, unless precomputed, the reference model's on
the completions and on the KL pairs; ``12 N T`` in all (``8 N T`` with ``--precompute``), ``N`` the
policy's parameters (the tied embedding counted once, as the LM head), attention's ``O(T^2)`` FLOPs left
out. Utilisation divides the FLOPs per second by the device's dense peak for the precision
(:data:`PEAK_FLOPS`, matched on the device name; ``--peak-tflops`` for others, none on a CPU). Memory: on
CUDA the peak allocated during a variant's steps above what was allocated before them (activations and
gradients; every trainer's weights stay resident), and the device's overall peak; on a CPU the process's
peak resident set size.

    python benchmarks/throughput.py                     # CPU: the tiny default (hidden 64, 2 layers)
    python benchmarks/throughput.py --preset gpu199m --out results/reference/perf   # a GPU: 199M, bf16, 16 x 512
    python benchmarks/throughput.py --profile kto_s+fused   # also a torch.profiler table of one step
    python benchmarks/throughput.py --variants trl,kto_s+fused,kto_s+fused+compile,kto_s+fused+b32
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import resource
import statistics
import string
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from datasets import Dataset

from ktos import KTOSConfig, KTOSTrainer, compat
from ktos.provenance import ktos_revision
from ktos.toy.tiny import build_tiny_model, build_tiny_tokenizer

#: Dense peak FLOP/s by device-name fragment (first match wins) and precision: vendors' data sheets, without
#: sparsity; fp32 is plain fp32 (PyTorch's default matmul precision, no TF32).
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"bf16": 756e12, "fp32": 51.2e12}),
    ("H100", {"bf16": 989.4e12, "fp32": 66.9e12}),
    ("H200", {"bf16": 989.4e12, "fp32": 66.9e12}),
    ("A100", {"bf16": 312e12, "fp32": 19.5e12}),
    ("L40S", {"bf16": 362e12, "fp32": 91.6e12}),
]

#: Named configurations: the CPU's tiny default and the GPU's 199M Llama (the issue's measurement).
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"hidden": 64, "layers": 2, "heads": 4, "vocab": 0, "batch": 8, "seq_len": 32, "precision": "fp32",
            "steps": 40, "warmup": 5},
    "gpu199m": {"hidden": 1024, "layers": 16, "heads": 16, "vocab": 32000, "batch": 16, "seq_len": 512,
                "precision": "bf16", "steps": 40, "warmup": 5},
}  # fmt: skip


#: Attention implementations a variant may name, and transformers' names for them.
ATTENTION: dict[str, str] = {"eager": "eager", "sdpa": "sdpa", "flash": "flash_attention_2"}

#: The default ``--variants``: TRL's trainer, then KTO and KTO-S unfused and fused.
DEFAULT_VARIANTS = "trl,kto,kto_s,kto+fused,kto_s+fused"


@dataclass(frozen=True)
class Variant:
    """A trainer to time: ``method`` ``trl`` (TRL's KTOTrainer), ``kto`` or ``kto_s``; ``fused`` sets
    ``fuse_forward_passes``; ``shared`` also fuses the policy's graded call (TRL < 1.6); ``compile`` sets
    ``torch_compile``; ``attn`` overrides ``--attn`` (an :data:`ATTENTION` name); ``batch`` overrides ``--batch``
    (the micro-batch, rows per call)."""

    method: str
    fused: bool = False
    shared: bool = False
    compile: bool = False
    attn: str | None = None
    batch: int | None = None

    @property
    def name(self) -> str:
        flags = [f for f in ("fused", "shared", "compile") if getattr(self, f)] + ([self.attn] if self.attn else [])
        return "+".join([self.method, *flags] + ([f"b{self.batch}"] if self.batch else []))

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``method[+fused][+shared][+compile][+eager|+sdpa|+flash][+b<N>]``; raises ``ValueError`` naming what
        is wrong."""
        method, *options = text.strip().split("+")
        if method not in ("trl", "kto", "kto_s"):
            raise ValueError(f"variant {text!r}: unknown method {method!r} (trl, kto, kto_s)")
        fields: dict[str, Any] = {}
        for option in options:
            if option in ("fused", "shared", "compile"):
                fields[option] = True
            elif option in ATTENTION:
                fields["attn"] = option
            elif option[:1] == "b" and option[1:].isdigit() and int(option[1:]) > 0:
                fields["batch"] = int(option[1:])
            else:
                known = ", ".join(["fused", "shared", "compile", *ATTENTION, "b<N>"])
                raise ValueError(f"variant {text!r}: unknown option {option!r} ({known})")
        variant = cls(method, **fields)
        if method == "trl" and (variant.fused or variant.shared):
            raise ValueError(f"variant {text!r}: TRL's trainer has no fused or shared forward passes")
        if variant.shared and not variant.fused:
            raise ValueError(f"variant {text!r}: shared needs fused")
        if variant.shared and not compat.KTO_LOSS_HOOK:
            raise ValueError(f"variant {text!r}: shared needs TRL < 1.6 (its forward is the one replaced)")
        return variant


class SharedPolicyTrainer(KTOSTrainer):
    """``KTOSTrainer`` whose every TRL < 1.6 ``forward`` is one call (:func:`ktos.compat.fused_forward`): the
    policy's graded call scores the KL pairs too, detached, instead of a separate no-grad call."""

    def forward(self, model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        return compat.fused_forward(self, model, batch)


def variants(spec: str) -> list[Variant]:
    """The comma-separated ``spec`` parsed (:meth:`Variant.parse`); the first must be TRL's plain trainer, the
    baseline of every ratio, and no variant may come twice."""
    chosen = [Variant.parse(text) for text in spec.split(",") if text.strip()]
    if not chosen or chosen[0] != Variant("trl"):
        raise ValueError(f"--variants {spec!r}: the first variant must be trl, the baseline")
    names = [v.name for v in chosen]
    if len(set(names)) < len(names):
        raise ValueError(f"--variants {spec!r}: a variant comes twice")
    return chosen


def synthetic_rows(n: int, seq_len: int, seed: int = 0) -> Dataset:
    """``n`` feedback rows of ``seq_len`` tokens each with the character tokenizer: a prompt of ``seq_len // 2``
    letters and digits, a completion of the rest but one (TRL appends EOS); labels alternate."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    prompt_len = seq_len // 2
    completion_len = seq_len - prompt_len - 1
    text = lambda k: "".join(rng.choice(alphabet) for _ in range(k))  # noqa: E731
    return Dataset.from_list(
        [{"prompt": text(prompt_len), "completion": text(completion_len), "label": i % 2 == 0} for i in range(n)]
    )


def build_model(tokenizer: Any, args: argparse.Namespace, attn: str) -> torch.nn.Module:
    """The random-init Llama of ``args`` (seed 0, so policy and reference start equal) with attention ``attn``,
    its vocabulary widened to ``args.vocab`` when that is larger than the tokenizer's (the extra rows are never a
    target)."""
    model = build_tiny_model(tokenizer, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                             max_positions=max(256, args.seq_len), seed=0)  # fmt: skip
    if args.vocab > len(tokenizer):
        torch.manual_seed(0)
        model.resize_token_embeddings(args.vocab, mean_resizing=False)
    model.set_attn_implementation(attn)
    return model


def make_trainer(variant: Variant, data: Dataset, args: argparse.Namespace, out: str) -> Any:
    """A trainer of ``variant`` with its own policy, reference, optimizer and scheduler, ready for
    ``training_step`` on ``trainer.model_wrapped`` (the policy prepared as ``Trainer.train`` prepares it; the
    trainer prepares its reference model itself)."""
    tokenizer = build_tiny_tokenizer()
    attn = ATTENTION.get(variant.attn or "", args.attn)
    policy, reference = build_model(tokenizer, args, attn), build_model(tokenizer, args, attn)
    on_cpu = not torch.cuda.is_available()
    fields = {
        "output_dir": out, "per_device_train_batch_size": variant.batch or args.batch, "max_length": args.seq_len,
        "gradient_checkpointing": False, "save_strategy": "no", "disable_tqdm": True, "report_to": "none",
        "learning_rate": 1e-5, "beta": 0.2, "max_steps": args.steps, "bf16": args.precision == "bf16",
        "precompute_ref_log_probs": args.precompute, "use_cpu": on_cpu, "logging_steps": 1,
        "torch_compile": variant.compile,
    }  # fmt: skip
    if variant.method == "trl":
        config, cls = compat.KTOConfig(**fields), compat.KTOTrainer
    else:
        config = KTOSConfig(**fields, use_kto_s=variant.method == "kto_s", fuse_forward_passes=variant.fused)
        cls = SharedPolicyTrainer if variant.shared else KTOSTrainer
    trainer = cls(model=policy, ref_model=reference, args=config, train_dataset=data, processing_class=tokenizer)
    # As Trainer.train prepares them: the policy's forward under the precision's autocast (bf16), compiled for
    # +compile; without this a bf16 benchmark would time the policy in fp32.
    trainer.create_optimizer()
    trainer.model_wrapped, trainer.optimizer = trainer.accelerator.prepare(trainer.model, trainer.optimizer)
    trainer.create_scheduler(num_training_steps=args.steps)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); training_step divides by it
    return trainer


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_step(trainer: Any, batch: dict[str, Any]) -> tuple[float, float]:
    """One optimizer step: (seconds, CUDA bytes allocated at its peak above those allocated before; 0 on CPU)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else 0
    sync()
    start = time.perf_counter()
    trainer.training_step(trainer.model_wrapped, batch)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    sync()
    seconds = time.perf_counter() - start
    return seconds, (torch.cuda.max_memory_allocated() - before if cuda else 0.0)


def time_steps(trainers: dict[str, Any], steps: int) -> dict[str, dict[str, list[float]]]:
    """``steps`` steps of every trainer, interleaved; the order rotates by one each step. Per trainer:
    ``seconds`` and ``step_peak_bytes`` per step."""
    batches = {name: list(t.get_train_dataloader()) for name, t in trainers.items()}
    out: dict[str, dict[str, list[float]]] = {name: {"seconds": [], "step_peak_bytes": []} for name in trainers}
    names = list(trainers)
    for i in range(steps):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            seconds, peak = timed_step(trainers[name], batches[name][i % len(batches[name])])
            out[name]["seconds"].append(seconds)
            out[name]["step_peak_bytes"].append(peak)
    return out


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (linear interpolation between order statistics)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def device_name() -> str:
    return (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})"
    )


def peak_flops(name: str, precision: str, override_tflops: float | None) -> float | None:
    """The device's dense peak FLOP/s at ``precision``: ``override_tflops`` if given, else :data:`PEAK_FLOPS`."""
    if override_tflops:
        return override_tflops * 1e12
    return next((peaks.get(precision) for fragment, peaks in PEAK_FLOPS if fragment in name), None)


def summarise(
    times: dict[str, dict[str, list[float]]], trainers: dict[str, Any], args: argparse.Namespace
) -> list[dict]:
    """One row per variant: step time quantiles (ms), tokens/s, MFU, memory, and tokens/s relative to the first
    variant (TRL's trainer)."""
    n_params = sum(p.numel() for p in next(iter(trainers.values())).model.parameters())
    peak = peak_flops(device_name(), args.precision, args.peak_tflops)
    rows = []
    for name, measured in times.items():
        batch = next(iter(trainers[name].get_train_dataloader()))
        tokens = int(compat.sequence(batch, "completion")[1].sum())
        flops = (8 if args.precompute else 12) * n_params * tokens
        seconds = measured["seconds"][args.warmup :]
        median = statistics.median(seconds)
        rows.append({
            "variant": name, "median_ms": 1e3 * median, "p10_ms": 1e3 * quantile(seconds, 0.1),
            "p90_ms": 1e3 * quantile(seconds, 0.9), "tokens_per_s": tokens / median,
            "mfu": flops / median / peak if peak else None,
            "step_peak_gib": max(measured["step_peak_bytes"]) / 2**30 if torch.cuda.is_available() else None,
            "params": n_params, "tokens_per_step": tokens, "model_flops_per_step": flops,
        })  # fmt: skip
    for row in rows:
        row["speed_vs_trl"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
    return rows


def memory_note() -> str:
    if torch.cuda.is_available():
        return f"device peak allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (all trainers resident)"
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return f"process peak RSS {peak_kib / 2**20:.2f} GiB (all trainers resident)"


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    head = "| variant | median ms | p10 ms | p90 ms | tokens/s | MFU | step peak GiB | tokens/s vs TRL |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['step_peak_gib']:.2f}" if r["step_peak_gib"] is not None else "n/a"
        lines.append(f"| {r['variant']} | {r['median_ms']:.2f} | {r['p10_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{r['tokens_per_s']:,.0f} | {mfu} | {mem} | {r['speed_vs_trl']:.3f}x |")  # fmt: skip
    return "\n".join(lines)


def profile_step(trainer: Any, rows: int = 15) -> str:
    """``torch.profiler``'s table of one training step of ``trainer`` (top ``rows`` ops by self time)."""
    from torch.profiler import ProfilerActivity, profile

    batch = next(iter(trainer.get_train_dataloader()))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    timed_step(trainer, batch)  # warm
    with profile(activities=activities) as prof:
        timed_step(trainer, batch)
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), help="default: gpu199m with CUDA, else cpu")
    for name, kind in (("hidden", int), ("layers", int), ("heads", int), ("vocab", int), ("batch", int),
                       ("seq-len", int), ("steps", int), ("warmup", int)):  # fmt: skip
        parser.add_argument(f"--{name}", type=kind, help="overrides the preset (vocab 0: the tokenizer's 100)")
    parser.add_argument("--precision", choices=["fp32", "bf16"])
    parser.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, eager, flash_attention_2)")
    parser.add_argument("--precompute", action="store_true", help="precompute the reference log-probs (TRL's option)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated, trl first (see above)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, where PEAK_FLOPS lacks it")
    parser.add_argument("--profile", metavar="VARIANT", help="print a torch.profiler table of one step of VARIANT")
    parser.add_argument("--out", help="directory for the results (JSON and Markdown, named after the device)")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset or ("gpu199m" if torch.cuda.is_available() else "cpu")]
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def write_results(out: Path, rows: list[dict], args: argparse.Namespace, note: str, text: str) -> Path:
    """``out/throughput_<device>_<config>_trl<version>.{json,md}``; returns the JSON path."""
    slug = "".join(c if c.isalnum() else "_" for c in device_name()).strip("_")
    stem = f"throughput_{slug}_h{args.hidden}_l{args.layers}_b{args.batch}x{args.seq_len}_{args.precision}_{args.attn}"
    stem += ("_precompute" if args.precompute else "") + f"_trl{compat.TRL_VERSION}"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": device_name(), "torch": torch.__version__, "trl": str(compat.TRL_VERSION),
            "ktos": ktos_revision(), "threads": torch.get_num_threads(), "memory": note,
            "args": vars(args)}  # fmt: skip
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / f"{stem}.md").write_text(text + "\n")
    return out / f"{stem}.json"


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        chosen = variants(args.variants)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    data = synthetic_rows(max(v.batch or args.batch for v in chosen) * 8, args.seq_len)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {v.name: make_trainer(v, data, args, f"{tmp}/{v.name}") for v in chosen}
        times = time_steps(trainers, args.steps)
        rows = summarise(times, trainers, args)
        profile = profile_step(trainers[args.profile]) if args.profile else ""
    header = (f"{device_name()}, torch {torch.__version__}, TRL {compat.TRL_VERSION}, "
              f"{torch.get_num_threads()} threads; "
              f"Llama hidden {args.hidden}, {args.layers} layers, {args.heads} heads, {rows[0]['params'] / 1e6:.3f}M "
              f"parameters, {args.attn} attention (unless named); micro-batch {args.batch} (unless b<N>) x "
              f"{args.seq_len} tokens, {args.precision}"
              f"{', precomputed reference' if args.precompute else ''}; {args.steps} steps each, interleaved, "
              f"first {args.warmup} dropped")  # fmt: skip
    text = f"{header}\n\n{table(rows)}\n\n{memory_note()}"
    print(text)
    if profile:
        print(f"\ntorch.profiler, one step of {args.profile}:\n{profile}")
    if args.out:
        profiled = f"\n\ntorch.profiler, one step of {args.profile}:\n\n```\n{profile}```" if profile else ""
        print(f"wrote {write_results(Path(args.out), rows, args, memory_note(), text + profiled)}")
    return rows


if __name__ == "__main__":
    main()
