"""Task quality of a trained policy, measured on held-out data.

* :func:`task_accuracy`: greedy exact-answer accuracy on held-out ``{"prompt", "answer"}`` items (a
  JSONL file such as the embedded default's ``heldout.jsonl``): the share of prompts whose greedy
  continuation, read by :func:`extract_answer`, equals the answer; beside it a continuous score, the mean
  log-probability of the correct answer (:func:`answer_logprobs`).
* :data:`TASK`: the two as ``ktos train`` takes them (:class:`ktos.runs.quality.TaskEval`), handed in by the
  command line: the library measures a run's quality through it and never imports the toy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..runs.quality import HALVES, TaskEval

#: A trailing mark a response template may add to an answer (scored as the answer without it).
ANSWER_END = "."


def extract_answer(text: str, eos_token: str = "</s>") -> str:
    """The answer in generated ``text``: cut at the first EOS or newline, whitespace and a final
    :data:`ANSWER_END` stripped (accuracy scores the answer, not the template)."""
    return text.split(eos_token, 1)[0].split("\n", 1)[0].strip().removesuffix(ANSWER_END).strip()


def load_items(path: str | Path) -> list[dict]:
    """Held-out ``{"prompt", "answer"}`` items from a JSONL file, or from the ``heldout.jsonl`` in a directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "heldout.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@torch.no_grad()
def task_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[dict],
    *,
    max_new_tokens: int = 6,
    batch_size: int = 256,
) -> dict:
    """Greedy exact-answer accuracy on held-out prompts: the fraction of ``items`` whose greedy
    continuation (at most ``max_new_tokens`` tokens, read by :func:`extract_answer`) equals the answer.

    Prompts are left-padded. Returns ``{"metric": "task_accuracy", "value": fraction, "n": items}`` plus the
    accuracy on each of :data:`HALVES`, ``value_val`` (even-numbered items) and ``value_test`` (odd-numbered),
    ``correct``, each item's outcome in order as a string of ``"1"`` (right) and ``"0"`` (wrong), from which
    any other split of the items is read, and ``logprob``, the mean over items of :func:`answer_logprobs` (nats);
    the model's train/eval mode is restored afterwards.
    """
    if not items:
        raise ValueError("no held-out items")
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    right: list[bool] = []
    try:
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            enc = tokenizer(
                [item["prompt"] for item in chunk], padding=True, padding_side="left", return_tensors="pt"
            ).to(model.device)
            out = model.generate(  # type: ignore[operator]  # transformers types generate as a tensor attribute
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=False)
            right += [
                extract_answer(text, tokenizer.eos_token) == str(item["answer"]).strip()
                for text, item in zip(texts, chunk, strict=True)
            ]
    finally:
        model.train(was_training)
    halves = {f"value_{half}": _share(right[i::2]) for i, half in enumerate(HALVES)}
    correct = "".join("1" if r else "0" for r in right)
    logprob = float(answer_logprobs(model, tokenizer, items, batch_size=batch_size).mean())
    return {"metric": "task_accuracy", "value": sum(right) / len(items), "n": len(items), **halves, "correct": correct,
            "logprob": logprob}  # fmt: skip


@torch.no_grad()
def answer_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, items: Sequence[dict], *, batch_size: int = 256
) -> torch.Tensor:
    """Per item, ``log pi(" " + answer | prompt)`` in nats: the summed log-probability of the correct answer's
    tokens (a space, then the answer, as the task's completions write it; prompt and answer tokenized apart and
    joined, as TRL joins a prompt and its completion), read with one forward pass per batch (right-padded). A
    continuous score beside exact match: it moves with every change of the answer's probability, not only when
    the greedy answer flips. The model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[torch.Tensor] = []
    try:
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            prompts = tokenizer([item["prompt"] for item in chunk])["input_ids"]
            answers = tokenizer([f" {str(item['answer']).strip()}" for item in chunk], add_special_tokens=False)
            rows = [p + a for p, a in zip(prompts, answers["input_ids"], strict=True)]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            scored = torch.zeros((len(rows), width), dtype=torch.bool)
            for r, (row, p) in enumerate(zip(rows, prompts, strict=True)):
                ids[r, : len(row)], mask[r, : len(row)] = torch.tensor(row), 1
                scored[r, len(p) : len(row)] = True
            ids, mask, scored = ids.to(model.device), mask.to(model.device), scored.to(model.device)
            logps = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
            token = logps.gather(-1, ids[:, 1:, None]).squeeze(-1)
            out.append((token * scored[:, 1:]).sum(-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def _share(right: Sequence[bool]) -> float:
    """The fraction of ``True`` (NaN for none)."""
    return sum(right) / len(right) if right else float("nan")


#: The toy task's evaluation as ``ktos train`` takes it: its held-out items and their greedy accuracy.
TASK = TaskEval(load_items, task_accuracy)
