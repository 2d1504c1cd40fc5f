"""Order and weight KTO training data so that every batch holds both labels.

TRL 1.5.1's ``KTOTrainer`` does not shuffle: its ``_get_train_sampler`` returns a
``SequentialSampler``, so the training batches are consecutive chunks of ``batch_size`` rows
(``per_device_train_batch_size``) in file order, every epoch, and the KL reference point ``z0`` of a
batch is estimated from mismatched pairs made by rotating the completions inside that same chunk.
The order written here is therefore the order of the batches. A batch holding one label only
trains on half of the KTO objective; the strategies:

* ``interleave``: keeps every row and orders the rows so that every chunk of ``batch_size`` holds
  both labels, in proportion to the data (:func:`interleave_order`); class weights from
  :func:`class_weights`.
* ``subset``: the workaround of the background note, kept for comparison: all rows of the minority
  label, the majority label sampled down to the same count, shuffled; weights 1.0/1.0. It throws
  data away and, being only shuffled, still leaves some one-label batches.
* ``none``: keeps every row, shuffled; weights from :func:`class_weights`.

All randomness comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ktos.data import (
    MANIFEST_FILE,
    DataValidationError,
    read_dataset_dir,
    write_dataset_dir,
)

log = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("none", "subset", "interleave")
#: Target of ``desirable_weight * n_desirable / (undesirable_weight * n_undesirable)``: the middle
#: of the band [1, 4/3] that the KTO paper (Eq. 8) and TRL advise.
TARGET_RATIO: float = 7 / 6


def class_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """``(desirable_weight, undesirable_weight)`` for TRL's ``KTOConfig``.

    Rule: the weighted ratio ``w_D * n_D / (w_U * n_U)`` is set to ``7/6``, the middle of the band
    ``[1, 4/3]`` advised by the KTO paper (Eq. 8) and checked by TRL, and the larger weight is 1.0,
    so the class with more weighted mass is scaled down::

        w_D = (7/6) n_U / max((7/6) n_U, n_D),    w_U = n_D / max((7/6) n_U, n_D)

    Weights are rounded to 4 significant digits (not decimals, so that a tiny weight never becomes
    0). Aiming at the middle keeps TRL's check (which rounds its bounds to 2 decimals) satisfied; at
    the edge (ratio 1:1) rounding can fail it. For 746/254 this gives ``(0.3972, 1.0)``.
    """
    if n_desirable < 1 or n_undesirable < 1:
        raise ValueError(f"both labels need rows, got {n_desirable} desirable and {n_undesirable} undesirable")
    scaled_undesirable = TARGET_RATIO * n_undesirable
    top = max(scaled_undesirable, n_desirable)
    return _round_sig(scaled_undesirable / top), _round_sig(n_desirable / top)


def _round_sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    return float(f"{x:.{digits}g}")


def _chunks(n: int, batch_size: int) -> list[range]:
    """Row ranges of the consecutive batches of ``batch_size`` (the last one may be shorter)."""
    return [range(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def count_one_label_batches(labels: Sequence[bool], batch_size: int) -> int:
    """Number of consecutive chunks of ``batch_size`` rows (last partial chunk included) holding one label only."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return sum(len({bool(labels[i]) for i in chunk}) == 1 for chunk in _chunks(len(labels), batch_size))


def one_label_run(labels: Sequence[bool], batch_size: int) -> tuple[int, int, float]:
    """``(start, length, chance)``: the longest run of consecutive batches of ``batch_size`` (in order) that each hold
    one label only (its first batch's index and its length, in batches), and about how likely a run at least that
    long is in a shuffled order: ``N * q**length`` (capped at 1), with ``N`` batches and ``q = p**b + (1 - p)**b``
    the chance that a shuffled batch of ``b`` rows holds one label (``p``: the desirable share)."""
    chunks = _chunks(len(labels), batch_size)
    one = [len({bool(labels[i]) for i in chunk}) == 1 for chunk in chunks]
    best_start = best = run = 0
    for k, single in enumerate(one):
        run = run + 1 if single else 0
        if run > best:
            best_start, best = k - run + 1, run
    p = sum(map(bool, labels)) / max(len(labels), 1)
    q = p**batch_size + (1 - p) ** batch_size
    return best_start, best, min(1.0, len(chunks) * q**best)


def warn_if_sorted_by_label(labels: Sequence[bool], batch_size: int, name: str = "train") -> bool:
    """Log a warning, and return ``True``, when the data's order puts many consecutive one-label batches together
    (a run of at least 4 that a shuffled order would make less than 1% likely: :func:`one_label_run`), as a
    dataset sorted by label does; the message says how to shuffle."""
    start, length, chance = one_label_run(labels, batch_size)
    if length < 4 or chance >= 0.01:
        return False
    log.warning(
        "%s dataset: %d consecutive batches of %d rows (rows %d to %d) hold one label each, which a shuffled order "
        "makes about %.1g likely: is it sorted by label? KTO reads it in order; shuffle it once "
        "(`dataset.shuffle(seed=0)`) or order it with `ktos balance --strategy interleave`",
        name,
        length,
        batch_size,
        start * batch_size,
        min((start + length) * batch_size, len(labels)) - 1,
        chance,
    )
    return True


def _desirable_per_batch(sizes: Sequence[int], n_desirable: int) -> list[int]:
    """How many desirable rows each batch gets.

    Even schedule: with ``p = n_desirable / n``, batch ``k`` gets ``round(p * C_k) - round(p * C_{k-1})``
    (``C_k``: rows in batches ``0..k``), clamped so that it and every later batch of two or more rows
    keep at least one row of each label. Clamping is always feasible when each label has at least as
    many rows as there are batches of two or more rows; the last batch takes what is left.
    """
    n = sum(sizes)
    d_left, u_left = n_desirable, n - n_desirable
    mixed_left = sum(s >= 2 for s in sizes)  # batches of >= 2 rows, this one included
    counts: list[int] = []
    cum = given = 0
    for size in sizes:
        cum += size
        target = (2 * n_desirable * cum + n) // (2 * n) - given  # round-half-up of p * C_k, minus given
        if size >= 2:
            mixed_left -= 1
            lo = max(1, size - (u_left - mixed_left))
            hi = min(size - 1, d_left - mixed_left)
        else:
            lo = max(0, size - u_left)
            hi = min(size, d_left)
        d = min(max(target, lo), hi)
        counts.append(d)
        given += d
        d_left -= d
        u_left -= size - d
    return counts


def interleave_order(labels: Sequence[bool], batch_size: int, seed: int) -> list[int]:
    """A permutation of ``range(len(labels))`` whose every chunk of ``batch_size`` holds both labels.

    Each label's rows are shuffled with ``seed``; batch ``k`` takes its share of desirable rows from
    :func:`_desirable_per_batch` (about ``batch_size * n_desirable / n``, spread evenly, at least one
    of each label) and fills the rest with undesirable rows; each batch is then shuffled. A last
    batch of one row (``n % batch_size == 1``) necessarily holds one label; every other batch holds both.

    Raises ``ValueError`` if ``batch_size < 2``, if a label is absent, or if the minority label has
    fewer rows than there are batches of two or more rows (then no order can mix every batch).
    """
    if batch_size < 2:
        raise ValueError(f"interleave needs batch_size >= 2, got {batch_size}")
    labels = [bool(v) for v in labels]
    desirable = [i for i, v in enumerate(labels) if v]
    undesirable = [i for i, v in enumerate(labels) if not v]
    if not desirable or not undesirable:
        raise ValueError(
            f"interleave needs both labels, got {len(desirable)} desirable and {len(undesirable)} undesirable"
        )
    sizes = [len(c) for c in _chunks(len(labels), batch_size)]
    mixed = sum(s >= 2 for s in sizes)
    minority = min(len(desirable), len(undesirable))
    if minority < mixed:
        raise ValueError(
            f"cannot give each of the {mixed} batches of {batch_size} rows both labels: the minority label has only "
            f"{minority} rows ({len(desirable)} desirable, {len(undesirable)} undesirable); use strategy 'subset' "
            f"or a batch size of at least {-(-len(labels) // minority)}"
        )
    rng = np.random.default_rng(seed)
    desirable = [desirable[j] for j in rng.permutation(len(desirable))]
    undesirable = [undesirable[j] for j in rng.permutation(len(undesirable))]
    order: list[int] = []
    for size, d in zip(sizes, _desirable_per_batch(sizes, len(desirable)), strict=True):
        batch = desirable[:d] + undesirable[: size - d]
        desirable, undesirable = desirable[d:], undesirable[size - d :]
        order += [batch[j] for j in rng.permutation(size)]
    return order


def _subset_order(labels: Sequence[bool], rng: np.random.Generator) -> list[int]:
    """All rows of the minority label plus as many majority rows sampled without replacement, shuffled."""
    desirable = [i for i, v in enumerate(labels) if v]
    undesirable = [i for i, v in enumerate(labels) if not v]
    minority, majority = sorted((desirable, undesirable), key=len)
    kept = minority + [majority[j] for j in sorted(rng.choice(len(majority), size=len(minority), replace=False))]
    return [kept[j] for j in rng.permutation(len(kept))]


def balance(
    in_dir: str | Path, out_dir: str | Path, *, strategy: str, batch_size: int, seed: int = 0
) -> dict[str, Any]:
    """Reorder (and for ``subset``, subsample) a dataset dir for training; write a dataset dir.

    ``batch_size`` is TRL's ``per_device_train_batch_size``. The manifest holds ``rows``,
    ``desirable``, ``undesirable``, ``sha256``, the ``desirable_weight`` and ``undesirable_weight`` to
    pass to ``KTOConfig``, ``one_label_batches`` (chunks of ``batch_size`` in the written order that
    hold one label only) out of ``batches``, ``strategy``, ``batch_size``, ``seed``, ``kept`` and
    ``dropped`` rows per label, and ``input_sha256``. Returns the manifest.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (TRL's KTOTrainer needs it for the KL term), got {batch_size}")
    ds = read_dataset_dir(in_dir)
    labels = [bool(v) for v in ds["label"]]
    n_desirable, n_undesirable = sum(labels), len(labels) - sum(labels)
    if n_desirable == 0 or n_undesirable == 0:
        raise DataValidationError(
            f"{in_dir}: column 'label': {n_desirable} desirable and {n_undesirable} undesirable rows; "
            f"balancing needs both"
        )
    rng = np.random.default_rng(seed)
    if strategy == "interleave":
        try:
            order = interleave_order(labels, batch_size, seed)
        except ValueError as err:
            raise DataValidationError(f"{in_dir}: {err}") from err
    elif strategy == "subset":
        order = _subset_order(labels, rng)
    else:
        order = [int(j) for j in rng.permutation(len(labels))]
    out_labels = [labels[i] for i in order]
    kept_d = sum(out_labels)
    kept = {"desirable": kept_d, "undesirable": len(out_labels) - kept_d}
    if strategy == "subset":
        weights = (1.0, 1.0)
    else:
        weights = class_weights(kept["desirable"], kept["undesirable"])
    one_label = count_one_label_batches(out_labels, batch_size)
    batches = -(-len(out_labels) // batch_size)
    manifest = write_dataset_dir(
        ds.select(order),
        out_dir,
        desirable_weight=weights[0],
        undesirable_weight=weights[1],
        one_label_batches=one_label,
        batches=batches,
        strategy=strategy,
        batch_size=batch_size,
        seed=seed,
        kept=kept,
        dropped={"desirable": n_desirable - kept["desirable"], "undesirable": n_undesirable - kept["undesirable"]},
        input_sha256=json.loads((Path(in_dir) / MANIFEST_FILE).read_text(encoding="utf-8")).get("sha256"),
    )
    log.info(
        "balance %s: %d -> %d rows (%d desirable, %d undesirable), batch %d, weights %.4f/%.4f, "
        "one-label batches %d of %d",
        strategy,
        len(labels),
        manifest["rows"],
        manifest["desirable"],
        manifest["undesirable"],
        batch_size,
        *weights,
        one_label,
        batches,
    )
    return manifest
