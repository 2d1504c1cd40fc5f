"""Pretraining the embedded default's tiny base model on the toy task's corpus (:mod:`ktos.toy.task`).

A tiny Llama (:func:`ktos.toy.tiny.build_tiny_model`, character-level tokenizer) trained with a plain
torch loop: causal LM cross-entropy (nats/token) on each corpus line followed by EOS, AdamW, a linear
warm-up over 5% of the steps then cosine decay to a tenth of the peak learning rate (transformers'
``get_cosine_with_min_lr_schedule_with_warmup``), gradient norm clipped at 1. On the CPU it runs in
float32 and is deterministic for a seed and thread count; on a GPU (when there is one, or ``device="cuda"``)
the forward pass runs under bf16 autocast. It is never tuned on the preference task;
``pretrain_log.json`` records the losses, the device, the precision, the time, tokens/s and, given the
held-out items, the base model's greedy task accuracy.

Model size is a study axis: :data:`SIZES` names presets from 0.09M to 105M parameters, each with the
pretraining learning rate and length that bring its base model into the default's accuracy band.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_cosine_with_min_lr_schedule_with_warmup,
)

from ..provenance import sha256_file, weights_sha256
from .bases import compare_bases, write_checksums
from .quality import load_items, task_accuracy
from .tiny import build_tiny_model, build_tiny_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Size:
    """A base model's shape (Llama: ``hidden_size``, ``num_layers``, ``num_heads``, MLP width 2x hidden) and the
    pretraining that suits it: peak learning rate ``lr`` and optimizer ``steps`` of 64 lines."""

    hidden_size: int
    num_layers: int
    num_heads: int
    lr: float
    steps: int


#: Named base-model sizes (parameter counts with the character-level tokenizer). "0.09M" is the embedded default.
SIZES: dict[str, Size] = {
    "0.09M": Size(64, 2, 4, lr=3e-3, steps=3000),
    "0.3M": Size(128, 2, 4, lr=2e-3, steps=3000),
    "1M": Size(192, 3, 6, lr=1e-3, steps=3000),
    "2.6M": Size(256, 4, 8, lr=6e-4, steps=3000),
    "21M": Size(512, 8, 8, lr=6e-4, steps=3000),
    "105M": Size(1024, 10, 16, lr=3e-4, steps=3000),
}


def resolve_device(device: str | None) -> torch.device:
    """``device`` as given, else a CUDA GPU when there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _autocast(device: torch.device) -> tuple[contextlib.AbstractContextManager, str]:
    """bf16 autocast on a GPU (precision ``"bf16"``), nothing on the CPU (``"fp32"``)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16), "bf16"
    return contextlib.nullcontext(), "fp32"


@dataclass(frozen=True)
class PaddedCorpus:
    """A corpus padded once, as its tokenizer pads (its side, its pad id), and held on the training device:
    ``input_ids`` and ``attention_mask`` (lines x longest line), ``lengths`` (tokens per line, on the CPU)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor
    left: bool

    @classmethod
    def build(cls, tokenizer: PreTrainedTokenizerBase, encoded: list[list[int]], device: torch.device) -> PaddedCorpus:
        padded = tokenizer.pad({"input_ids": encoded}, padding=True, return_tensors="pt")
        lengths = torch.tensor([len(ids) for ids in encoded])
        return cls(padded["input_ids"].to(device), padded["attention_mask"].to(device), lengths,
                   tokenizer.padding_side == "left")  # fmt: skip

    def batch(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(input_ids, attention_mask, tokens)`` of lines ``rows``: exactly ``tokenizer.pad`` of those lines
        (cut to their longest on the padded side), cut on the device; ``tokens`` not padding. Only the row
        indices travel, from pinned memory and without waiting: a plain host-to-device copy would synchronise."""
        index = torch.tensor(rows)
        width = int(self.lengths[index].max())
        columns = slice(-width, None) if self.left else slice(0, width)
        pinned = index.pin_memory() if self.input_ids.device.type == "cuda" else index
        on_device = pinned.to(self.input_ids.device, non_blocking=True)
        return (
            self.input_ids[on_device, columns],
            self.attention_mask[on_device, columns],
            int(self.lengths[index].sum()),
        )


def _train_loop(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: list[list[int]],
    *,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    max_seconds: float | None,
) -> tuple[list[float], int]:
    """Train ``model`` in place on the token-id lists ``encoded``; returns the loss of each step and the number
    of (non-padding) tokens trained on.

    Nothing in a step waits for the device: the losses stay on it until the end (the progress bar reads the
    latest about once a second), so a GPU runs ahead of the Python loop. On a GPU AdamW is the fused kernel."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr, weight_decay=0.01, fused=True if device.type == "cuda" else None
    )
    schedule = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=max(1, steps // 20), num_training_steps=steps, min_lr_rate=0.1
    )
    generator = torch.Generator().manual_seed(seed)
    corpus = PaddedCorpus.build(tokenizer, encoded, device)
    order: list[int] = []
    losses: list[torch.Tensor] = []
    tokens = 0
    autocast, _ = _autocast(device)
    model.train()
    start = shown = time.perf_counter()
    bar = tqdm(range(steps), desc="pretrain", unit="step", mininterval=1.0)
    for step in bar:
        if len(order) < batch_size:
            order += torch.randperm(len(encoded), generator=generator).tolist()
        input_ids, attention_mask, batch_tokens = corpus.batch(order[:batch_size])
        order = order[batch_size:]
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        tokens += batch_tokens
        with autocast:
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.detach())
        now = time.perf_counter()
        if now - shown >= 1.0:
            bar.set_postfix(loss=f"{losses[-1].item():.3f}", refresh=False)
            shown = now
        if max_seconds is not None and now - start > max_seconds:
            log.warning("pretraining hit the time limit (%g s) after %d of %d steps", max_seconds, step + 1, steps)
            break
    bar.close()
    model.eval()
    return torch.stack(losses).tolist(), tokens


def pretrain_base(
    corpus_path: str | Path,
    out_dir: str | Path,
    *,
    size: str | None = None,
    seed: int = 0,
    steps: int | None = None,
    batch_size: int = 64,
    lr: float | None = None,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    num_heads: int | None = None,
    max_seconds: float | None = None,
    num_threads: int | None = 1,
    device: str | None = None,
    heldout: str | Path | None = None,
    reference: str | Path | None = None,
) -> dict:
    """Pretrain a tiny Llama base model on ``corpus_path`` (one example per line) and save it to ``out_dir``.

    ``size`` names a preset of :data:`SIZES` (default ``"0.09M"``, the embedded default) whose shape, ``lr`` and
    ``steps`` apply unless given here.

    Loss: causal LM cross-entropy in nats per predicted token, over each line's characters and a
    final EOS, padding ignored. AdamW (weight decay 0.01), ``lr`` with a 5% linear warm-up and
    cosine decay to ``lr / 10``, gradient norm clipped at 1. Batches of ``batch_size`` lines in an
    order fixed by ``seed`` (a fresh permutation each pass over the corpus), as are the initial
    weights. Stops after ``steps`` steps or, when ``max_seconds`` is set, after the first step that
    ends past it (on a GPU, the first step queued past it: the loop runs ahead of the device).

    ``num_threads`` sets torch's intra-op threads for the call (restored afterwards; ``None`` keeps
    the current setting). The default, 1, suits a model this small: a second thread buys little and
    slows badly when another process holds the other core; it also makes the losses independent of the
    machine's core count.

    ``device``: ``"cpu"``, ``"cuda"``, ... (default: a GPU when there is one); on a GPU the forward pass runs under
    bf16 autocast. ``heldout``: held-out ``{"prompt", "answer"}`` items (a JSONL file or a task dir) on which the
    trained base model's greedy task accuracy is measured and recorded. ``reference``: a committed base directory
    this pretraining rebuilds; the log records whether the rebuild equals it bit for bit
    (:func:`ktos.toy.bases.compare_bases`, which warns when it does not).

    Writes the model and tokenizer (``save_pretrained``, loadable by
    :func:`ktos.models.load_model_and_tokenizer`), their ``SHA256SUMS`` and ``pretrain_log.json``, and returns the
    log: ``losses`` (one per step), ``seconds`` (wall clock of the loop), ``cpu_seconds`` (process CPU time,
    all threads), ``steps`` (done), ``params``, ``device``, ``precision``, ``tokens``, ``tokens_per_s``,
    ``heldout_accuracy`` (or null), ``sha256`` (of the weights), ``reference`` (the comparison, or null) and the
    settings.
    """
    preset = SIZES[size or "0.09M"]
    steps = preset.steps if steps is None else steps
    lr = preset.lr if lr is None else lr
    hidden_size = preset.hidden_size if hidden_size is None else hidden_size
    num_layers = preset.num_layers if num_layers is None else num_layers
    num_heads = preset.num_heads if num_heads is None else num_heads
    corpus_path, out = Path(corpus_path), Path(out_dir)
    lines = [line for line in corpus_path.read_text(encoding="utf-8").splitlines() if line]
    if not lines:
        raise ValueError(f"empty corpus: {corpus_path}")
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, seed=seed)
    n_params = sum(p.numel() for p in model.parameters())
    where = resolve_device(device)
    model.to(where)  # type: ignore[arg-type]  # transformers' to() is typed for its own wrapper
    encoded = tokenizer([line + tokenizer.eos_token for line in lines])["input_ids"]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or previous_threads)
    threads = torch.get_num_threads()
    log.info(
        "pretraining a %.3fM-parameter base model on %d lines: %d steps of %d, lr %g, on %s (%d threads)",
        n_params / 1e6,
        len(lines),
        steps,
        batch_size,
        lr,
        where,
        threads,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        losses, tokens = _train_loop(
            model, tokenizer, encoded, seed=seed, steps=steps, batch_size=batch_size, lr=lr, max_seconds=max_seconds
        )
    finally:
        torch.set_num_threads(previous_threads)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    accuracy = task_accuracy(model, tokenizer, load_items(heldout))["value"] if heldout else None
    model.to("cpu")  # type: ignore[arg-type]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_checksums(out)
    record = {
        "losses": losses,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "steps": len(losses),
        "steps_requested": steps,
        "params": n_params,
        "size": size,
        "device": torch.cuda.get_device_name(where) if where.type == "cuda" else "cpu",
        "precision": _autocast(where)[1],
        "tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "heldout_accuracy": accuracy,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "max_seconds": max_seconds,
        "threads": threads,
        "corpus_lines": len(lines),
        "corpus_sha256": sha256_file(corpus_path),
        "sha256": weights_sha256(out),
        "reference": compare_bases(out, reference) if reference is not None else None,
    }
    (out / "pretrain_log.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    first, last = losses[: min(5, len(losses))], losses[-min(5, len(losses)) :]
    log.info(
        "pretrained in %.1f s (%.0f tokens/s): loss %.3f -> %.3f nats/token (mean of first / last 5 steps); "
        "held-out accuracy %s; saved to %s",
        seconds,
        record["tokens_per_s"] or 0.0,
        sum(first) / len(first),
        sum(last) / len(last),
        accuracy,
        out,
    )
    return record
