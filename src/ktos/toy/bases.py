"""Base models as artifacts: a name for each (size, pretraining seed, recipe), checksums, and a rebuild compared
with a committed copy bit for bit.

A base model's weights depend on the floating-point kernels of the machine that pretrained it (docs/study.md,
"Committed bases"), so the study trains from committed bases and treats the base as a random factor: several
pretraining seeds per size. The base's checksum is the SHA-256 of its weights
(:func:`ktos.provenance.weights_sha256`), which every run records. Each base lives in a directory named by
:func:`base_name`, with a ``SHA256SUMS``
file (:func:`write_checksums`, the format ``sha256sum -c`` reads) beside its ``pretrain_log.json``.

Standard library at import time, so that the Snakemake workflow can name bases at parse time whatever
environment it runs in; :func:`compare_bases` imports torch and safetensors when called.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..provenance import UNSHARDED_SHA256_FILE, WEIGHTS_FILE, sha256_file, weights_sha256

log = logging.getLogger(__name__)

#: Checksums of a base directory's files, one ``<sha256>  <name>`` line each.
CHECKSUMS_FILE = "SHA256SUMS"
#: Files of a base directory that are not part of the model (the log records times; the checksums file is itself).
NOT_CHECKSUMMED = frozenset({"pretrain_log.json", CHECKSUMS_FILE})


def base_name(size: str, seed: int, recipe: Mapping[str, Any] | None = None) -> str:
    """``"0.09M_seed3"``: the base of ``size`` pretrained with ``seed`` by the size's preset recipe on the default
    corpus. ``recipe`` holds what differs from that (steps, batch size, the corpus's settings); when it holds
    anything, the name ends with ``_r`` and the first 8 hex digits of its SHA-256 (as sorted JSON), so that two
    recipes never share a directory and the same recipe always does."""
    name = f"{size}_seed{int(seed)}"
    if recipe:
        digest = hashlib.sha256(json.dumps(dict(recipe), sort_keys=True).encode()).hexdigest()[:8]
        name += f"_r{digest}"
    return name


def write_checksums(model_dir: str | Path) -> Path:
    """Write ``model_dir/SHA256SUMS``: the SHA-256 of every file of the saved model and tokenizer (not the
    pretraining log, whose times differ between identical rebuilds), sorted by name."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name not in NOT_CHECKSUMMED)
    path = model_dir / CHECKSUMS_FILE
    path.write_text("".join(f"{sha256_file(p)}  {p.name}\n" for p in files))
    return path


def verify_checksums(model_dir: str | Path) -> list[str]:
    """The files of ``model_dir/SHA256SUMS`` that are missing or differ (empty when all match); a directory
    without the file raises ``FileNotFoundError``."""
    model_dir = Path(model_dir)
    bad = []
    for line in (model_dir / CHECKSUMS_FILE).read_text().splitlines():
        digest, _, name = line.partition("  ")
        path = model_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(name)
    return bad


#: The largest file of a committed base: bigger weights are stored in shards (:func:`shard_base`).
MAX_FILE_BYTES = 6_000_000


def shard_base(model_dir: str | Path, max_shard_size: int = MAX_FILE_BYTES) -> list[Path]:
    """Store ``model_dir``'s weights in shards of at most ``max_shard_size`` bytes (``save_pretrained``'s
    ``model-0000k-of-0000n.safetensors`` and their index), recording in :data:`UNSHARDED_SHA256_FILE` the SHA-256
    of the unsharded file, the checksum runs from this base record; rewrites ``SHA256SUMS``. Returns the shards."""
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    unsharded = sha256_file(model_dir / WEIGHTS_FILE)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    (model_dir / WEIGHTS_FILE).unlink()
    model.save_pretrained(model_dir, max_shard_size=max_shard_size)
    (model_dir / UNSHARDED_SHA256_FILE).write_text(unsharded + "\n")
    write_checksums(model_dir)
    return sorted(model_dir.glob("model-*-of-*.safetensors"))


def _tensors(model_dir: Path) -> dict[str, Any]:
    """Every tensor of a saved model, from its one weights file or its shards."""
    from safetensors.torch import load_file

    files = (
        [model_dir / WEIGHTS_FILE] if (model_dir / WEIGHTS_FILE).is_file() else model_dir.glob("model-*.safetensors")
    )
    return {name: tensor for path in files for name, tensor in load_file(path).items()}


def compare_bases(rebuilt: str | Path, reference: str | Path) -> dict[str, Any]:
    """How a rebuilt base compares with a reference (committed) one: both weights' SHA-256, ``identical`` (the
    weights files equal bit for bit), ``max_abs_diff`` (the largest absolute difference of any parameter; 0 when
    identical) and the reference's held-out accuracy from its ``pretrain_log.json``. Logs a warning when they
    differ: the study's numbers are for the reference, and a different base gives different numbers."""
    rebuilt, reference = Path(rebuilt), Path(reference)
    mine, theirs = weights_sha256(rebuilt), weights_sha256(reference)
    if theirs is None:
        raise FileNotFoundError(f"{reference}: no {WEIGHTS_FILE} to compare with")
    identical = mine == theirs
    max_abs_diff = 0.0
    if not identical and mine is not None:
        a, b = _tensors(rebuilt), _tensors(reference)
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
            max_abs_diff = float("inf")
        else:
            max_abs_diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    ref_log = reference / "pretrain_log.json"
    ref_accuracy = json.loads(ref_log.read_text()).get("heldout_accuracy") if ref_log.is_file() else None
    record = {
        "reference": str(reference),
        "sha256": mine,
        "reference_sha256": theirs,
        "identical": identical,
        "max_abs_diff": max_abs_diff,
        "reference_heldout_accuracy": ref_accuracy,
    }
    if identical:
        log.info("the rebuilt base equals %s bit for bit (sha256 %s)", reference, theirs)
    else:
        log.warning(
            "the rebuilt base differs from %s (largest parameter difference %.3g; reference held-out accuracy %s): "
            "this machine's floating-point kernels give another base, and runs from it give other numbers than the "
            "committed study. Train from the committed base (synthetic.bases: committed) to reproduce it.",
            reference,
            max_abs_diff,
            ref_accuracy,
        )
    return record


#: Columns of :func:`manifest`.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "name", "size", "seed", "recipe", "params", "heldout_accuracy", "sha256", "steps", "batch_size", "lr", "device",
    "precision", "threads", "seconds", "corpus_sha256",
)  # fmt: skip


def manifest(bases_dir: str | Path) -> list[dict[str, Any]]:
    """One row per base directory under ``bases_dir`` (those with a ``pretrain_log.json``), by recipe, size, then
    seed: its name, size, pretraining seed, recipe (the name's ``r<digest>`` suffix, :func:`base_name`; empty for
    the preset recipe on the default corpus), parameter count, held-out accuracy, weights SHA-256 and settings, read
    from its files (the rows of ``results/reference/bases/bases.csv``)."""
    rows = []
    for log_path in Path(bases_dir).glob(f"*/{'pretrain_log.json'}"):
        record = json.loads(log_path.read_text())
        rows.append({
            **{key: record.get(key) for key in MANIFEST_COLUMNS},
            "name": log_path.parent.name,
            "recipe": log_path.parent.name.partition("_r")[2],
            "sha256": weights_sha256(log_path.parent),
            "seconds": round(record["seconds"], 1),
        })  # fmt: skip
    return sorted(rows, key=lambda row: (row["recipe"], row["params"], row["seed"]))


def write_manifest(bases_dir: str | Path, out_csv: str | Path | None = None) -> Path:
    """Write :func:`manifest` as CSV (default ``bases_dir/bases.csv``)."""
    import csv

    path = Path(out_csv) if out_csv is not None else Path(bases_dir) / "bases.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
        writer.writeheader()
        writer.writerows(manifest(bases_dir))
    return path
