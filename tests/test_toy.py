"""The embedded default: toy task data (ktos.toy.task), base-model pretraining (ktos.toy.pretrain) and greedy
accuracy (ktos.toy.quality)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from ktos.models import load_model_and_tokenizer  # noqa: E402
from ktos.toy.pretrain import PaddedCorpus, pretrain_base  # noqa: E402
from ktos.toy.quality import answer_logprobs, extract_answer, load_items, task_accuracy  # noqa: E402
from ktos.toy.task import (  # noqa: E402
    RESPONSE_END,
    has_carry,
    is_correct,
    parse_prompt,
    split_line,
    synth_data,
    wrong_answer,
)
from ktos.toy.tiny import build_tiny_tokenizer  # noqa: E402

FILES = ("data.jsonl", "manifest.json", "heldout.jsonl", "corpus.txt")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "seed0"
    synth_data(out, seed=0)
    return out


def test_deterministic_per_seed_and_different_across_seeds(task_dir: Path, tmp_path: Path) -> None:
    synth_data(tmp_path / "again", seed=0)
    synth_data(tmp_path / "other", seed=1)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (task_dir / name).read_bytes(), name
        assert (tmp_path / "other" / name).read_bytes() != (task_dir / name).read_bytes(), name


def test_default_counts_and_manifest(task_dir: Path) -> None:
    rows = _jsonl(task_dir / "data.jsonl")
    manifest = json.loads((task_dir / "manifest.json").read_text())
    assert len(rows) == manifest["rows"] == 1000
    assert sum(r["label"] for r in rows) == manifest["desirable"] == 746
    assert manifest["undesirable"] == 254
    assert all(isinstance(r["label"], bool) for r in rows)
    assert manifest["seed"] == 0
    assert manifest["sha256"] == hashlib.sha256((task_dir / "data.jsonl").read_bytes()).hexdigest()
    labels = [r["label"] for r in rows]
    assert labels != sorted(labels) and labels != sorted(labels, reverse=True)  # shuffled
    assert len(_jsonl(task_dir / "heldout.jsonl")) == 200
    for row in rows:
        assert len(row["prompt"]) < 20 and len(row["completion"]) < 8


def test_labels_reflect_arithmetic(task_dir: Path) -> None:
    for row in _jsonl(task_dir / "data.jsonl"):
        a, b = parse_prompt(row["prompt"])
        assert row["completion"].startswith(" ") and row["completion"].endswith(RESPONSE_END)
        assert (int(row["completion"].removesuffix(RESPONSE_END)) == a + b) is row["label"]
        assert is_correct(row["prompt"], row["completion"]) is row["label"]
    corpus = (task_dir / "corpus.txt").read_text()
    assert RESPONSE_END not in corpus  # the response template is new to the base model (no SFT)
    for item in _jsonl(task_dir / "heldout.jsonl"):
        a, b = parse_prompt(item["prompt"])
        assert item["answer"] == str(a + b)


def test_heldout_disjoint_from_feedback_and_corpus(task_dir: Path) -> None:
    held = {item["prompt"] for item in _jsonl(task_dir / "heldout.jsonl")}
    feedback = {row["prompt"] for row in _jsonl(task_dir / "data.jsonl")}
    corpus_lines = (task_dir / "corpus.txt").read_text().splitlines()
    corpus = {split_line(line)[0] for line in corpus_lines}
    assert held and not held & feedback and not held & corpus
    right = sum(is_correct(*split_line(line)) for line in corpus_lines) / len(corpus_lines)
    assert 0.45 < right < 0.65  # a mix: the base model must not already be good at the task


def test_wrong_answers_are_wrong() -> None:
    """Each error model gives the error it names, never the sum: forgetting the carry is 10 short, a swap exchanges
    the last two digits (or falls back to off-by where that changes nothing), off-by is within 10."""
    rng = random.Random(0)
    kinds_seen = set()
    for _ in range(2000):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        total, digits = a + b, str(a + b)
        swapped = int(digits[:-2] + digits[-1] + digits[-2])
        for kind in ("off_by", "swap", None) + (("forgot_carry",) if has_carry(a, b) else ()):
            wrong = wrong_answer(a, b, rng, kind=kind)
            assert wrong != total and wrong > 0
            if kind == "forgot_carry" or (kind is None and has_carry(a, b)):
                assert wrong == total - 10, (a, b, kind)
            elif kind == "swap" and swapped != total:
                assert wrong == swapped, (a, b)
            elif kind == "off_by" or (kind == "swap" and swapped == total):
                assert 0 < abs(wrong - total) <= 10, (a, b, kind)
            else:  # kind None, no carry: off-by or swap
                assert wrong == swapped or 0 < abs(wrong - total) <= 10, (a, b)
            kinds_seen.add(kind)
    assert kinds_seen == {"off_by", "swap", None, "forgot_carry"}
    with pytest.raises(ValueError):
        wrong_answer(11, 11, rng, kind="forgot_carry")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        synth_data(tmp_path, rows=10, desirable=11)
    with pytest.raises(ValueError):
        synth_data(tmp_path, heldout=0)


@pytest.mark.parametrize(
    ("text", "answer"),
    [(" 81</s>", "81"), (" 81", "81"), ("81\nQ: 1+1=", "81"), (" 1</s>23", "1"), ("  ", ""), (" 8 1", "8 1")],
)
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_corpus_batches_are_the_tokenizers_padding(task_dir: Path, side: str) -> None:
    """Pretraining cuts its batches from the corpus padded once: each must be ``tokenizer.pad`` of its lines."""
    import torch

    tokenizer = build_tiny_tokenizer()
    tokenizer.padding_side = side
    lines = (task_dir / "corpus.txt").read_text().splitlines()[:300] + ["Q: 1+1= 2 and a much longer line"]
    encoded = tokenizer([line + tokenizer.eos_token for line in lines])["input_ids"]
    corpus = PaddedCorpus.build(tokenizer, encoded, torch.device("cpu"))
    rng = random.Random(0)
    for rows in [rng.sample(range(len(encoded)), 16) for _ in range(20)] + [[len(encoded) - 1, 0], [5]]:
        expected = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, padding=True, return_tensors="pt")
        input_ids, attention_mask, tokens = corpus.batch(rows)
        assert torch.equal(input_ids, expected["input_ids"]) and torch.equal(attention_mask, expected["attention_mask"])
        assert tokens == int(expected["attention_mask"].sum())


@pytest.fixture(scope="module")
def tiny_base(task_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("base")
    record = pretrain_base(task_dir / "corpus.txt", out, seed=0, steps=30, batch_size=16, hidden_size=32)
    return out, record


@pytest.mark.slow
def test_pretrain_loss_falls_and_saves_loadable_model(tiny_base: tuple[Path, dict]) -> None:
    out, record = tiny_base
    losses = record["losses"]
    assert record["steps"] == len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert record["params"] > 0 and record["seconds"] > 0
    assert json.loads((out / "pretrain_log.json").read_text()) == record
    model, tokenizer = load_model_and_tokenizer(str(out))
    assert model.config.hidden_size == 32 and tokenizer.padding_side == "left"


@pytest.mark.slow
def test_pretrain_deterministic(task_dir: Path, tiny_base: tuple[Path, dict], tmp_path: Path) -> None:
    again = pretrain_base(task_dir / "corpus.txt", tmp_path, seed=0, steps=30, batch_size=16, hidden_size=32)
    assert again["losses"] == tiny_base[1]["losses"]


@pytest.mark.slow
def test_pretrain_stops_at_max_seconds(task_dir: Path, tmp_path: Path) -> None:
    record = pretrain_base(
        task_dir / "corpus.txt", tmp_path, steps=10_000, batch_size=8, hidden_size=32, max_seconds=0.0
    )
    assert record["steps"] == 1


@pytest.mark.slow
def test_task_accuracy_range_and_count(task_dir: Path, tiny_base: tuple[Path, dict]) -> None:
    model, tokenizer = load_model_and_tokenizer(str(tiny_base[0]))
    model.train()
    result = task_accuracy(model, tokenizer, load_items(task_dir / "heldout.jsonl"), batch_size=64)
    assert result["metric"] == "task_accuracy" and result["n"] == 200
    assert 0.0 <= result["value"] <= 1.0
    assert model.training  # mode restored
    assert load_items(task_dir)[:3] == _jsonl(task_dir / "heldout.jsonl")[:3]  # a task dir works too


def own_answers(model, tokenizer, items: list[dict]) -> list[str]:
    """The model's own greedy answer to each item's prompt, read as task_accuracy reads it."""
    enc = tokenizer([i["prompt"] for i in items], padding=True, padding_side="left", return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=False)
    return [extract_answer(t) for t in texts]


@pytest.mark.slow
def test_task_accuracy_counts_exact_matches(task_dir: Path, tiny_base: tuple[Path, dict]) -> None:
    """Score items against the model's own greedy answers: every one must count as right."""
    model, tokenizer = load_model_and_tokenizer(str(tiny_base[0]))
    items = load_items(task_dir)[:20]
    answers = own_answers(model, tokenizer, items)
    own = [{"prompt": i["prompt"], "answer": a} for i, a in zip(items, answers, strict=True)]
    assert task_accuracy(model, tokenizer, own, batch_size=7)["value"] == 1.0
    shifted = [{"prompt": i["prompt"], "answer": i["answer"] + "x"} for i in own]
    assert task_accuracy(model, tokenizer, shifted)["value"] == 0.0


@pytest.mark.slow
def test_task_accuracy_halves_are_the_even_and_odd_items(task_dir: Path, tiny_base: tuple[Path, dict]) -> None:
    """The validation half is items 0, 2, 4, ...; the test half 1, 3, 5, ...: made right and wrong on purpose."""
    model, tokenizer = load_model_and_tokenizer(str(tiny_base[0]))
    items = load_items(task_dir)[:12]
    # even items scored against the model's own answer (right), odd ones against an impossible one (wrong)
    mixed = [
        {"prompt": i["prompt"], "answer": a if k % 2 == 0 else "x"}
        for k, (i, a) in enumerate(zip(items, own_answers(model, tokenizer, items), strict=True))
    ]
    result = task_accuracy(model, tokenizer, mixed, batch_size=5)
    assert (result["value"], result["value_val"], result["value_test"]) == (0.5, 1.0, 0.0)
    assert result["correct"] == "10" * 6  # each item's outcome, in order, across the batches


@pytest.mark.slow
def test_answer_logprob_is_the_correct_answers_log_probability(task_dir: Path, tiny_base: tuple[Path, dict]) -> None:
    """Batched and padded, each item's score equals the answer's log-probability computed alone by the chain rule,
    one next-token distribution at a time; and task_accuracy reports their mean."""
    model, tokenizer = load_model_and_tokenizer(str(tiny_base[0]))
    items = load_items(task_dir)[:9]
    items[0] = {"prompt": items[0]["prompt"], "answer": "1234"}  # a longer answer: rows of different widths
    batched = answer_logprobs(model, tokenizer, items, batch_size=4)
    for item, got in zip(items, batched.tolist(), strict=True):
        ids = tokenizer(item["prompt"])["input_ids"]
        answer = tokenizer(" " + item["answer"], add_special_tokens=False)["input_ids"]
        want = 0.0
        for token in answer:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            want += float(logits.log_softmax(-1)[token])
            ids = ids + [token]
        assert got == pytest.approx(want, abs=1e-4)
    assert task_accuracy(model, tokenizer, items)["logprob"] == pytest.approx(float(batched.mean()), abs=1e-5)
