"""The embedded offline default's task: two-digit additions, their feedback data, corpus and held-out set.

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
  exact-answer accuracy (:func:`ktos.toy.quality.task_accuracy`). No held-out problem appears anywhere else.
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
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import datasets

from ..data import write_dataset_dir
from ..provenance import sha256_file

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
    """Whether ``completion`` states the sum asked by ``prompt`` (exact integer match, template mark ignored)."""
    a, b = parse_prompt(prompt)
    return completion.strip().removesuffix(RESPONSE_END).strip() == str(a + b)


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
        out,
        rows,
        desirable,
        heldout,
        corpus_lines,
        100 * corpus_right / corpus_lines,
    )
    return manifest
