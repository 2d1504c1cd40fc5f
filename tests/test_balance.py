"""Tests for ktos.balance, including the batches a real TRL KTOTrainer yields."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ktos.balance import (
    balance,
    class_weights,
    count_one_label_batches,
    interleave_order,
)
from ktos.data import DataValidationError, read_dataset_dir, write_dataset_dir


def shuffled_labels(n_desirable: int, n_undesirable: int, seed: int = 1) -> list[bool]:
    labels = [True] * n_desirable + [False] * n_undesirable
    np.random.default_rng(seed).shuffle(labels)
    return [bool(v) for v in labels]


def make_dir(path: Path, n_desirable: int, n_undesirable: int) -> Path:
    labels = shuffled_labels(n_desirable, n_undesirable)
    rows = [{"prompt": f"Q{i}:", "completion": f" A{i % 10}", "label": v} for i, v in enumerate(labels)]
    write_dataset_dir(datasets.Dataset.from_list(rows), path)
    return path


def trl_weights_in_range(n_d: int, n_u: int, dw: float, uw: float) -> bool:
    """TRL 1.5.1's own check in ``KTOTrainer._prepare_dataset`` (warns when this is False)."""
    if n_d == n_u:
        return True
    des_lo = round((n_u * uw / n_d) * 1, 2)
    des_hi = round((n_u * uw / n_d) * 1.33, 2)
    und_lo = round((n_d * dw / n_u) / 1.33, 2)
    und_hi = round((n_d * dw / n_u) / 1, 2)
    return des_lo <= dw <= des_hi or und_lo <= uw <= und_hi


# ---------------------------------------------------------------------------- class weights


def test_class_weights_746_254() -> None:
    assert class_weights(746, 254) == (0.3972, 1.0)
    assert class_weights(254, 746) == (1.0, 0.2918)
    assert class_weights(100, 100) == (1.0, 0.8571)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 20000), st.integers(1, 20000))
def test_class_weights_inside_band(n_d: int, n_u: int) -> None:
    dw, uw = class_weights(n_d, n_u)
    assert max(dw, uw) == 1.0 and 0 < min(dw, uw)
    assert 1.0 <= dw * n_d / (uw * n_u) <= 4 / 3
    assert trl_weights_in_range(n_d, n_u, dw, uw)


def test_class_weights_need_both_labels() -> None:
    with pytest.raises(ValueError):
        class_weights(0, 5)


# ---------------------------------------------------------------------------- batch counting and order


def test_count_one_label_batches() -> None:
    labels = [True, True, True, False, False, False, True]
    assert count_one_label_batches(labels, 2) == 3  # [T,T] [T,F] [F,F] [T]
    assert count_one_label_batches(labels, 3) == 3  # [T,T,T] [F,F,F] [T]
    assert count_one_label_batches(labels, 4) == 0  # [T,T,T,F] [F,F,T]
    assert count_one_label_batches(labels, 7) == 0
    assert count_one_label_batches([], 4) == 0


@pytest.mark.parametrize("batch_size", range(4, 17))
def test_interleave_746_254(batch_size: int) -> None:
    labels = shuffled_labels(746, 254)
    order = interleave_order(labels, batch_size, seed=0)
    assert sorted(order) == list(range(1000))
    out = [labels[i] for i in order]
    # A last batch of one row (1000 % 9 == 1) holds one label; no other batch does.
    assert count_one_label_batches(out, batch_size) == (1 if 1000 % batch_size == 1 else 0)
    p = 746 / 1000
    for start in range(0, 1000, batch_size):
        chunk = out[start : start + batch_size]
        assert abs(sum(chunk) - p * len(chunk)) < 1  # proportional: floor or ceil of the share


@pytest.mark.parametrize("batch_size", [2, 3])
def test_interleave_impossible_746_254(batch_size: int) -> None:
    # 500 (or 333) batches but only 254 undesirable rows: no order can mix every batch.
    with pytest.raises(ValueError, match="minority label has only 254 rows.*'subset'.*at least 4"):
        interleave_order(shuffled_labels(746, 254), batch_size, seed=0)


def test_interleave_deterministic() -> None:
    labels = shuffled_labels(746, 254)
    assert interleave_order(labels, 8, seed=0) == interleave_order(labels, 8, seed=0)
    assert interleave_order(labels, 8, seed=0) != interleave_order(labels, 8, seed=1)


def test_interleave_bad_inputs() -> None:
    with pytest.raises(ValueError, match="batch_size >= 2"):
        interleave_order([True, False], 1, seed=0)
    with pytest.raises(ValueError, match="both labels"):
        interleave_order([True, True, True], 2, seed=0)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(2, 32), st.integers(0, 2**31))
def test_interleave_property(n_d: int, n_u: int, batch_size: int, seed: int) -> None:
    labels = shuffled_labels(n_d, n_u, seed=seed % 7)
    n = n_d + n_u
    mixed_batches = n // batch_size + (n % batch_size >= 2)
    if min(n_d, n_u) < mixed_batches:
        with pytest.raises(ValueError):
            interleave_order(labels, batch_size, seed)
        return
    order = interleave_order(labels, batch_size, seed)
    assert sorted(order) == list(range(n))
    assert count_one_label_batches([labels[i] for i in order], batch_size) == (1 if n % batch_size == 1 else 0)


# ---------------------------------------------------------------------------- balance()


def test_balance_subset(tmp_path: Path) -> None:
    src = make_dir(tmp_path / "in", 746, 254)
    m = balance(src, tmp_path / "out", strategy="subset", batch_size=8, seed=0)
    assert (m["rows"], m["desirable"], m["undesirable"]) == (508, 254, 254)
    assert (m["desirable_weight"], m["undesirable_weight"]) == (1.0, 1.0)
    assert m["kept"] == {"desirable": 254, "undesirable": 254} and m["dropped"] == {"desirable": 492, "undesirable": 0}
    out = read_dataset_dir(tmp_path / "out")
    all_undesirable = {r["prompt"] for r in read_dataset_dir(src) if not r["label"]}
    assert {r["prompt"] for r in out if not r["label"]} == all_undesirable
    assert len(set(out["prompt"])) == 508
    assert m["one_label_batches"] == count_one_label_batches(list(out["label"]), 8)


@pytest.mark.parametrize("strategy", ["interleave", "none"])
def test_balance_keeps_every_row(tmp_path: Path, strategy: str) -> None:
    src = make_dir(tmp_path / "in", 746, 254)
    m = balance(src, tmp_path / "out", strategy=strategy, batch_size=8, seed=0)
    assert (m["rows"], m["desirable"], m["undesirable"]) == (1000, 746, 254)
    assert m["dropped"] == {"desirable": 0, "undesirable": 0}
    assert (m["desirable_weight"], m["undesirable_weight"]) == class_weights(746, 254)
    assert trl_weights_in_range(746, 254, m["desirable_weight"], m["undesirable_weight"])
    out, inp = read_dataset_dir(tmp_path / "out"), read_dataset_dir(src)
    assert sorted(map(json.dumps, out.to_list())) == sorted(map(json.dumps, inp.to_list()))
    assert out.to_list() != inp.to_list()  # reordered
    assert m["one_label_batches"] == count_one_label_batches(list(out["label"]), 8)
    if strategy == "interleave":
        assert m["one_label_batches"] == 0
    else:
        assert m["one_label_batches"] > 0
    assert m["strategy"] == strategy and m["batch_size"] == 8 and m["seed"] == 0 and m["batches"] == 125
    assert m["input_sha256"] == json.loads((src / "manifest.json").read_text())["sha256"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == m


def test_balance_deterministic(tmp_path: Path) -> None:
    src = make_dir(tmp_path / "in", 90, 30)
    for strategy in ("none", "subset", "interleave"):
        a = balance(src, tmp_path / f"{strategy}_a", strategy=strategy, batch_size=4, seed=5)
        b = balance(src, tmp_path / f"{strategy}_b", strategy=strategy, batch_size=4, seed=5)
        c = balance(src, tmp_path / f"{strategy}_c", strategy=strategy, batch_size=4, seed=6)
        assert a == b and a["sha256"] != c["sha256"]


def test_balance_errors(tmp_path: Path) -> None:
    src = make_dir(tmp_path / "in", 90, 30)
    with pytest.raises(ValueError, match="unknown strategy"):
        balance(src, tmp_path / "o", strategy="oversample", batch_size=8)
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        balance(src, tmp_path / "o", strategy="none", batch_size=1)
    with pytest.raises(DataValidationError, match="'subset' or a batch size of at least 4"):
        balance(src, tmp_path / "o", strategy="interleave", batch_size=2)
    one = tmp_path / "one"
    write_dataset_dir(datasets.Dataset.from_list([{"prompt": "a", "completion": "b", "label": True}] * 3), one)
    with pytest.raises(DataValidationError, match="3 desirable and 0 undesirable"):
        balance(one, tmp_path / "o", strategy="none", batch_size=2)


# ---------------------------------------------------------------------------- the batches TRL really yields


def trainer_batch_labels(
    data_dir: Path, batch_size: int, tmp_path: Path, weights: tuple[float, float]
) -> list[list[bool]]:
    """Labels of every batch the training dataloader of a real KTOSTrainer (on TRL's) yields for ``data_dir``."""
    from ktos import KTOSConfig, KTOSTrainer, compat
    from ktos.toy.tiny import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    args = KTOSConfig(
        output_dir=str(tmp_path / f"trainer_{batch_size}"),
        per_device_train_batch_size=batch_size,
        use_cpu=True,
        bf16=False,
        report_to="none",
        gradient_checkpointing=False,
        max_length=64,
        desirable_weight=weights[0],
        undesirable_weight=weights[1],
        disable_tqdm=True,
    )
    trainer = KTOSTrainer(
        model=build_tiny_model(tokenizer),
        ref_model=build_tiny_model(tokenizer),
        args=args,
        train_dataset=read_dataset_dir(data_dir),
        processing_class=tokenizer,
    )
    return [compat.labels(batch).tolist() for batch in trainer.get_train_dataloader()]


@pytest.mark.parametrize("n_d,n_u,batch_size", [(90, 30, 4), (90, 30, 8), (90, 30, 16), (60, 60, 2)])
def test_trainer_batches_hold_both_labels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, n_d: int, n_u: int, batch_size: int
) -> None:
    src = make_dir(tmp_path / "in", n_d, n_u)
    m = balance(src, tmp_path / "out", strategy="interleave", batch_size=batch_size, seed=0)
    with caplog.at_level(logging.WARNING):
        batches = trainer_batch_labels(
            tmp_path / "out", batch_size, tmp_path, (m["desirable_weight"], m["undesirable_weight"])
        )
    assert "don't seem to be in an ideal range" not in caplog.text
    assert len(batches) == -(-(n_d + n_u) // batch_size)
    assert sum(map(len, batches)) == n_d + n_u
    assert all(True in b and False in b for b in batches), batches
    assert m["one_label_batches"] == 0


def test_trainer_batches_without_interleave_can_be_one_label(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = make_dir(tmp_path / "in", 90, 30)
    m = balance(src, tmp_path / "out", strategy="none", batch_size=2, seed=0)
    with caplog.at_level(logging.WARNING):
        batches = trainer_batch_labels(tmp_path / "out", 2, tmp_path, (1.0, 1.0))
    assert "don't seem to be in an ideal range" in caplog.text  # the weight check is live
    one_label = sum(len(set(b)) == 1 for b in batches)
    assert one_label > 0 and one_label == m["one_label_batches"]
    assert [v for b in batches for v in b] == list(read_dataset_dir(tmp_path / "out")["label"])  # file order
