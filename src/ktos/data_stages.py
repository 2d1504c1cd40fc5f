"""The pipeline's data stages: ``ktos prepare`` (:func:`prepare`) and ``ktos split`` (:func:`split`).

:func:`prepare` loads and validates any supported source (:func:`ktos.data.load_feedback`) and writes it as a
dataset dir; :func:`split` splits a dataset dir into stratified, seeded ``train`` and ``eval`` dataset dirs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .data import MANIFEST_FILE, load_source, read_dataset_dir, write_dataset_dir

log = logging.getLogger(__name__)


def prepare(source: str, out_dir: str | Path, *, split: str = "train") -> dict[str, Any]:
    """Load and validate ``source`` (see :func:`load_feedback`) and write it as a dataset dir.

    The manifest adds ``source`` (as given) and ``split`` (``None`` unless a ``DatasetDict`` folder
    or hub dataset was read). Returns the manifest.
    """
    name, fmt, ds = load_source(source, split)
    manifest = write_dataset_dir(
        ds, out_dir, source=str(source), format=fmt, split=split if fmt in ("save_to_disk", "hub") else None
    )
    log.info(
        "prepared %s -> %s: %d rows (%d desirable, %d undesirable)",
        name,
        out_dir,
        manifest["rows"],
        manifest["desirable"],
        manifest["undesirable"],
    )
    return manifest


def split(in_dir: str | Path, out_dir: str | Path, *, eval_fraction: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """Split a dataset dir into ``out_dir/train`` and ``out_dir/eval``, stratified by label.

    For each label (``True`` then ``False``) its ``n`` rows are shuffled with a NumPy generator
    seeded by ``seed`` and the first ``k = round(eval_fraction * n)`` go to eval, with ``k`` kept in
    ``[1, n - 1]`` when ``n >= 2`` (a label with one row stays in train). Both outputs keep the rows
    in their input order, so the files depend only on the input, ``eval_fraction`` and ``seed``.
    Writes ``out_dir/manifest.json`` with rows/desirable/undesirable/sha256 per split and returns it.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must lie in (0, 1), got {eval_fraction}")
    ds = read_dataset_dir(in_dir)
    labels = list(ds["label"])
    rng = np.random.default_rng(seed)
    eval_rows: list[int] = []
    for label in (True, False):
        rows = [i for i, v in enumerate(labels) if v == label]
        n = len(rows)
        k = min(max(int(eval_fraction * n + 0.5), 1), n - 1) if n >= 2 else 0
        if k == 0:
            log.warning("label %s has %d row(s): eval gets none of it", label, n)
        eval_rows += [rows[j] for j in rng.permutation(n)[:k]]
    eval_set = set(eval_rows)
    train_idx = [i for i in range(len(labels)) if i not in eval_set]
    eval_idx = sorted(eval_set)
    common = {"source": str(in_dir), "eval_fraction": eval_fraction, "seed": seed}
    parts = {
        name: write_dataset_dir(ds.select(idx), Path(out_dir) / name, split=name, **common)
        for name, idx in (("train", train_idx), ("eval", eval_idx))
    }
    keys = ("rows", "desirable", "undesirable", "sha256")
    manifest: dict[str, Any] = {
        **common,
        **{name: {k: part[k] for k in keys} for name, part in parts.items()},
    }
    (Path(out_dir) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info(
        "split %s: train %d (%d/%d), eval %d (%d/%d) [rows (desirable/undesirable)]",
        in_dir,
        *(parts[s][k] for s in ("train", "eval") for k in ("rows", "desirable", "undesirable")),
    )
    return manifest
