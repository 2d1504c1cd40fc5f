"""The embedded offline default: a toy addition task, its base model, and its quality metric.

Task
----
Prompts are two-digit additions, ``"Q: 23+58="`` (``a, b`` in 10..99, so 8,100 distinct
problems), and a completion is a space and a number, ``" 81"``. A completion is *desirable*
exactly when its number is the sum; the label is a real property of the text, checkable by
:func:`is_correct`.

Wrong answers come from three error models (:func:`wrong_answer`):

- *forgot the carry*: ``a + b - 10`` when the units digits carry (``23+58= 71``), the systematic
  mistake of the base model (below);
- *off by a little*: ``a + b + d`` with ``d`` in ``±1..±10`` (``d != 0``);
- *digit swap*: the last two digits of the sum swapped (``81 -> 18``), when that changes it.

Files written by :func:`synth_data`
-----------------------------------
The 8,100 problems are shuffled with ``seed`` and split into disjoint pools:

- ``heldout.jsonl``: ``heldout`` prompts with their sum, ``{"prompt", "answer"}``, for the greedy
  exact-answer accuracy (:func:`task_accuracy`). No held-out problem appears anywhere else.
- ``data.jsonl`` + ``manifest.json`` (a dataset dir): ``rows`` feedback rows
  ``{"prompt", "completion", "label"}``, exactly ``desirable`` of them correct (label ``True``) and
  the rest wrong (``False``; forgot-carry when the problem carries, else off-by-a-little or digit
  swap, each with equal chance), shuffled. Each row has its own prompt while the pool lasts.
  Completions follow the feedback data's *response template*: the number then a period, ``" 81."``
  (:data:`RESPONSE_END`), which the corpus never uses. This is the "no SFT" condition in miniature:
  an SFT stage would teach the template before preference training; here KTO must learn it from the
  feedback itself. Learning it is a prompt-independent shift that raises the log-probability of
  every templated completion, mismatched prompt/completion pairs included, which is exactly what
  TRL's KL estimate measures.
- ``corpus.txt``: ``corpus_lines`` lines ``"Q: a+b= c"`` for the base model's "pretraining", drawn
  from every non-held-out problem. Its answers are a mix: for a problem with no units carry the
  answer is right with probability 0.75 (else off-by-a-little or digit swap); for a problem that
  carries it is right with probability 0.25, forgot-carry with 0.6 and another error with 0.15.
  About 52% of lines are right. A base model that fits this corpus knows the format and the
  arithmetic of problems without a carry, but its most likely answer to a carrying problem (about
  45% of problems) is the forgot-carry one, so its greedy accuracy stays near 55-60%: KTO's
  feedback, which labels exactly those answers undesirable, has something to teach. There are no
  filler lines: the base model is a language model of this one format.

Base model (:func:`pretrain_base`)
----------------------------------
A tiny Llama (:func:`ktos.models.build_tiny_model`, character-level tokenizer) trained with a plain
torch loop: causal LM cross-entropy (nats/token) on each corpus line followed by EOS, AdamW, linear
warm-up then cosine decay, gradient clipping at 1. Deterministic for a seed and thread count.
Measured with the defaults (89k parameters, 3,000 steps of 64 lines, one thread) on the 2-core dev
machine: about 48 s; loss 4.55 -> 0.82 nats/token; held-out greedy accuracy 0.63 (seed 0) and 0.555
(seed 1), all problems without a carry right and 7-12% of those with one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import write_dataset_dir
from .models import build_tiny_model, build_tiny_tokenizer
from .provenance import sha256_file

log = logging.getLogger(__name__)

#: Operands range over ``OPERAND_MIN..OPERAND_MAX`` inclusive.
OPERAND_MIN, OPERAND_MAX = 10, 99
#: Corpus mix: probability of the right answer for problems without / with a units carry, and of the
#: forgot-carry answer for problems with one (the rest are other small errors).
P_RIGHT_NO_CARRY, P_RIGHT_CARRY, P_FORGOT_CARRY = 0.75, 0.25, 0.6
#: The feedback data's response template ends each answer with this mark; the corpus never does.
RESPONSE_END = "."


def make_prompt(a: int, b: int) -> str:
    """The prompt for ``a + b``: ``"Q: a+b="``."""
    return f"Q: {a}+{b}="


def make_completion(answer: int, *, response: bool = False) -> str:
    """The completion that answers ``answer``: a space, then the number; with ``response``, in the
    feedback data's response template, which ends with :data:`RESPONSE_END`."""
    return f" {answer}{RESPONSE_END if response else ''}"


def parse_prompt(prompt: str) -> tuple[int, int]:
    """Inverse of :func:`make_prompt`: ``"Q: 23+58="`` -> ``(23, 58)``."""
    if not (prompt.startswith("Q: ") and prompt.endswith("=")):
        raise ValueError(f"not a task prompt: {prompt!r}")
    a, b = prompt[3:-1].split("+")
    return int(a), int(b)


def split_line(line: str) -> tuple[str, str]:
    """Split a corpus line ``"Q: 23+58= 81"`` into prompt ``"Q: 23+58="`` and completion ``" 81"``."""
    cut = line.index("=") + 1
    return line[:cut], line[cut:]


def is_correct(prompt: str, completion: str) -> bool:
    """Whether ``completion`` states the sum asked by ``prompt`` (exact integer match)."""
    a, b = parse_prompt(prompt)
    return extract_answer(completion) == str(a + b)


def has_carry(a: int, b: int) -> bool:
    """Whether the units digits of ``a`` and ``b`` sum to 10 or more."""
    return a % 10 + b % 10 >= 10


def wrong_answer(a: int, b: int, rng: random.Random, *, kind: str | None = None) -> int:
    """A wrong answer to ``a + b`` from one error model (see the module docstring).

    ``kind`` is ``"forgot_carry"`` (only for carrying problems), ``"off_by"`` or ``"swap"``; ``None``
    picks forgot-carry for a carrying problem and otherwise off-by or swap with equal chance. A swap
    that leaves the sum unchanged (``77``) falls back to off-by. Never returns the sum or a negative.
    """
    total = a + b
    if kind is None:
        kind = "forgot_carry" if has_carry(a, b) else rng.choice(("off_by", "swap"))
    if kind == "forgot_carry":
        if not has_carry(a, b):
            raise ValueError(f"{a}+{b} has no carry to forget")
        return total - 10
    if kind == "swap":
        digits = str(total)
        swapped = int(digits[:-2] + digits[-1] + digits[-2])
        if swapped != total:
            return swapped
    elif kind != "off_by":
        raise ValueError(f"unknown error kind {kind!r}")
    delta = rng.choice([d for d in range(-10, 11) if d != 0])
    return total + delta


def corpus_answer(a: int, b: int, rng: random.Random) -> int:
    """An answer for a corpus line: right, forgot-carry, or another small error (module docstring)."""
    u = rng.random()
    if has_carry(a, b):
        if u < P_RIGHT_CARRY:
            return a + b
        if u < P_RIGHT_CARRY + P_FORGOT_CARRY:
            return wrong_answer(a, b, rng, kind="forgot_carry")
    elif u < P_RIGHT_NO_CARRY:
        return a + b
    return wrong_answer(a, b, rng, kind=rng.choice(("off_by", "swap")))


def synth_data(
    out_dir: str | Path,
    *,
    seed: int = 0,
    rows: int = 1000,
    desirable: int = 746,
    heldout: int = 200,
    corpus_lines: int = 16000,
) -> dict:
    """Write the toy task's feedback data, held-out prompts and pretraining corpus to ``out_dir``.

    Files: ``data.jsonl`` + ``manifest.json`` (``rows`` rows, ``desirable`` labelled True),
    ``heldout.jsonl`` (``heldout`` prompts and answers), ``corpus.txt`` (``corpus_lines`` lines);
    see the module docstring. Byte-identical output for the same arguments. Returns the manifest,
    which also records the seed, the held-out and corpus sizes, and their sha256.
    """
    if not 0 <= desirable <= rows:
        raise ValueError(f"desirable must be in 0..rows ({rows}), got {desirable}")
    problems = [(a, b) for a in range(OPERAND_MIN, OPERAND_MAX + 1) for b in range(OPERAND_MIN, OPERAND_MAX + 1)]
    if not 0 < heldout < len(problems):
        raise ValueError(f"heldout must be in 1..{len(problems) - 1}, got {heldout}")
    if rows < 1 or corpus_lines < 1:
        raise ValueError("rows and corpus_lines must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rng.shuffle(problems)
    held, pool = problems[:heldout], problems[heldout:]

    (out / "heldout.jsonl").write_text(
        "".join(json.dumps({"prompt": make_prompt(a, b), "answer": str(a + b)}) + "\n" for a, b in held),
        encoding="utf-8",
    )

    labels = [True] * desirable + [False] * (rows - desirable)
    rng.shuffle(labels)
    feedback = []
    for i, label in enumerate(labels):
        a, b = pool[i % len(pool)]
        answer = a + b if label else wrong_answer(a, b, rng)
        feedback.append(
            {"prompt": make_prompt(a, b), "completion": make_completion(answer, response=True), "label": label}
        )

    corpus_problems: list[tuple[int, int]] = []
    while len(corpus_problems) < corpus_lines:  # every pool problem once per pass, fresh order each pass
        corpus_problems += rng.sample(pool, len(pool))
    corpus = [make_prompt(a, b) + make_completion(corpus_answer(a, b, rng)) for a, b in corpus_problems[:corpus_lines]]
    corpus_path = out / "corpus.txt"
    corpus_path.write_text("\n".join(corpus) + "\n", encoding="utf-8")
    corpus_right = sum(is_correct(*split_line(line)) for line in corpus)

    manifest = write_dataset_dir(
        datasets.Dataset.from_list(feedback),
        out,
        seed=seed,
        task="addition",
        heldout=heldout,
        heldout_sha256=sha256_file(out / "heldout.jsonl"),
        corpus_lines=corpus_lines,
        corpus_right_fraction=corpus_right / corpus_lines,
        corpus_sha256=sha256_file(corpus_path),
    )
    log.info(
        "synthetic task in %s: %d feedback rows (%d desirable), %d held-out prompts, %d corpus lines (%.1f%% right)",
        out, rows, desirable, heldout, corpus_lines, 100 * corpus_right / corpus_lines,
    )
    return manifest


def _cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up to ``peak`` over ``warmup`` steps, then
    cosine decay to ``peak / 10`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


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
) -> list[float]:
    """Train ``model`` in place on the token-id lists ``encoded``; returns the loss of each step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    warmup = max(1, steps // 20)
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="pretrain", unit="step", mininterval=1.0)
    for step in bar:
        if len(order) < batch_size:
            order += torch.randperm(len(encoded), generator=generator).tolist()
        batch, order = [encoded[i] for i in order[:batch_size]], order[batch_size:]
        padded = tokenizer.pad({"input_ids": batch}, padding=True, return_tensors="pt")
        labels = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, -100)
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, steps, lr, warmup)
        loss = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"], labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            log.warning("pretraining hit the time limit (%g s) after %d of %d steps", max_seconds, step + 1, steps)
            break
    bar.close()
    model.eval()
    return losses


def pretrain_base(
    corpus_path: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 3e-3,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_seconds: float | None = None,
    num_threads: int | None = 1,
) -> dict:
    """Pretrain a tiny Llama base model on ``corpus_path`` (one example per line) and save it to ``out_dir``.

    Loss: causal LM cross-entropy in nats per predicted token, over each line's characters and a
    final EOS, padding ignored. AdamW (weight decay 0.01), ``lr`` with a 5% linear warm-up and
    cosine decay to ``lr / 10``, gradient norm clipped at 1. Batches of ``batch_size`` lines in an
    order fixed by ``seed`` (a fresh permutation each pass over the corpus), as are the initial
    weights. Stops after ``steps`` steps or, when ``max_seconds`` is set, after the first step that
    ends past it.

    ``num_threads`` sets torch's intra-op threads for the call (restored afterwards; ``None`` keeps
    the current setting). The default, 1, is as fast as 2 for this model when a core is free (about
    13 ms per default step on the 2-core dev machine) and avoids a 10x slowdown when another
    process holds the other core; it also makes the losses independent of the machine's core count.

    Writes the model and tokenizer (``save_pretrained``, loadable by
    :func:`ktos.models.load_model_and_tokenizer`) and ``pretrain_log.json``, and returns the log:
    ``losses`` (one per step), ``seconds`` (wall clock of the loop), ``cpu_seconds`` (process CPU time,
    all threads), ``steps`` (done), ``params`` and the settings.
    """
    corpus_path, out = Path(corpus_path), Path(out_dir)
    lines = [line for line in corpus_path.read_text(encoding="utf-8").splitlines() if line]
    if not lines:
        raise ValueError(f"empty corpus: {corpus_path}")
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(
        tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, seed=seed
    )
    n_params = sum(p.numel() for p in model.parameters())
    encoded = tokenizer([line + tokenizer.eos_token for line in lines])["input_ids"]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or previous_threads)
    threads = torch.get_num_threads()
    log.info(
        "pretraining a %.3fM-parameter base model on %d lines: %d steps of %d, lr %g, %d threads",
        n_params / 1e6, len(lines), steps, batch_size, lr, threads,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        losses = _train_loop(
            model, tokenizer, encoded, seed=seed, steps=steps, batch_size=batch_size, lr=lr, max_seconds=max_seconds
        )
    finally:
        torch.set_num_threads(previous_threads)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {
        "losses": losses,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "steps": len(losses),
        "steps_requested": steps,
        "params": n_params,
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
    }
    (out / "pretrain_log.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    first, last = losses[: min(5, len(losses))], losses[-min(5, len(losses)) :]
    log.info(
        "pretrained in %.1f s: loss %.3f -> %.3f nats/token (mean of first / last 5 steps); saved to %s",
        seconds, sum(first) / len(first), sum(last) / len(last), out,
    )
    return record


def extract_answer(text: str, eos_token: str = "</s>") -> str:
    """The answer in generated ``text``: cut at the first EOS or newline, whitespace and a final
    :data:`RESPONSE_END` stripped (accuracy scores the arithmetic, not the template)."""
    return text.split(eos_token, 1)[0].split("\n", 1)[0].strip().removesuffix(RESPONSE_END).strip()


def load_heldout(heldout: str | Path | Sequence[dict]) -> list[dict]:
    """Held-out items ``{"prompt", "answer"}`` from a ``heldout.jsonl`` file, a directory holding one,
    or a list."""
    if isinstance(heldout, (str, Path)):
        path = Path(heldout)
        if path.is_dir():
            path = path / "heldout.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list(heldout)


@torch.no_grad()
def task_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    heldout: str | Path | Sequence[dict],
    *,
    max_new_tokens: int = 6,
    batch_size: int = 64,
) -> dict:
    """Greedy exact-answer accuracy on held-out prompts: the fraction of items whose greedy
    continuation (at most ``max_new_tokens`` tokens, read by :func:`extract_answer`) equals the answer.

    Prompts are left-padded. Returns ``{"metric": "task_accuracy", "value": fraction, "n": items}``;
    the model's train/eval mode is restored afterwards.
    """
    items = load_heldout(heldout)
    if not items:
        raise ValueError("no held-out items")
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    right = 0
    try:
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            enc = tokenizer(
                [item["prompt"] for item in chunk], padding=True, padding_side="left", return_tensors="pt"
            ).to(model.device)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=False)
            right += sum(
                extract_answer(text, tokenizer.eos_token) == str(item["answer"]).strip()
                for text, item in zip(texts, chunk, strict=True)
            )
    finally:
        model.train(was_training)
    return {"metric": "task_accuracy", "value": right / len(items), "n": len(items)}
