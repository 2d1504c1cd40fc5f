"""Load and validate KTO feedback data, and read and write it as dataset dirs.

KTO learns from *unpaired* feedback: rows of ``prompt``, ``completion`` and a boolean ``label``
(``True``: desirable, ``False``: undesirable). :func:`load_feedback` is the one loader for every
supported source; it validates the rows and returns a :class:`datasets.Dataset` with exactly those
three columns and ``label`` as a Python ``bool``. Any problem with the input raises
:class:`DataValidationError`, whose message is one line naming the source, the column and the first
offending rows.

Sources (picked by what ``source`` names):

* a ``.jsonl`` file (one JSON object per line) or a ``.json`` file (JSON lines, or one JSON array
  of objects);
* a ``.csv`` or ``.tsv`` file (every cell is text; ``label`` reads ``true``/``false``/``1``/``0``,
  any case);
* a ``.parquet`` (or ``.pq``) file;
* a directory written by :func:`write_dataset_dir` (a "dataset dir": ``data.jsonl`` and
  ``manifest.json``, whose ``sha256`` must match), or one holding a dataset dir per split (what
  :func:`ktos.data_stages.split` writes: ``split`` picks ``train`` or ``eval``);
* a directory written by :meth:`datasets.Dataset.save_to_disk` or
  :meth:`datasets.DatasetDict.save_to_disk` (``split`` picks the split of a ``DatasetDict``);
* any other directory as ``datasets.load_dataset(directory)`` reads it, as TRL's ``--dataset_name`` does: a folder
  of split files (``train.jsonl``, ``test.jsonl``, ``train.parquet``, ...), ``split`` picking one;
* otherwise a Hugging Face hub dataset id, loaded with ``datasets.load_dataset(id, name=config, split=split)``
  (with ``HF_HUB_OFFLINE=1`` only from the local cache).

Two other shapes are accepted as TRL accepts them: *conversational* rows, whose ``prompt`` and
``completion`` are lists of ``{"role": ..., "content": ...}`` messages (kept as lists; every message
needs a non-empty ``content``), and *paired* preference rows (``prompt``, ``chosen``, ``rejected``),
unpaired into two KTO rows each: ``(prompt, chosen, True)`` then ``(prompt, rejected, False)``.

On disk a prepared dataset is a dataset dir (see :func:`write_dataset_dir`), read back with
:func:`read_dataset_dir`; the pipeline's stages :func:`ktos.data_stages.prepare` and :func:`ktos.data_stages.split`
write them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pyarrow.parquet as pq
from datasets.exceptions import DatasetsError

from .provenance import sha256_file
from .sources import CSV_SUFFIXES, JSON_SUFFIXES, PARQUET_SUFFIXES, looks_like_path
from .validation import (
    KTO_COLUMNS,
    MAX_ROWS_SHOWN,
    PAIRED_COLUMNS,
    Columns,
    DataValidationError,
    check_text,
    checked_labels,
    is_paired,
    require_columns,
    short_repr,
)

log = logging.getLogger(__name__)

DATA_FILE = "data.jsonl"
MANIFEST_FILE = "manifest.json"
_CSV_LABELS = {"true": True, "false": False, "1": True, "0": False}


# --------------------------------------------------------------------------------------------
# Readers: each returns the columns of the source as Python lists


def _records_to_columns(records: list[dict[str, Any]]) -> Columns:
    """Columns from a list of row objects; a key missing from a row reads as ``None`` there."""
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec))
    return {name: [rec.get(name) for rec in records] for name in names}


def _read_json_file(path: Path) -> Columns:
    """Read JSON lines (blank lines skipped; rows are numbered by object, from 0) or a JSON array."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataValidationError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataValidationError(f"{path}: invalid JSON at line {lineno}: {err.msg}") from err
    bad = [i for i, rec in enumerate(records) if not isinstance(rec, dict)]
    if bad:
        shown = ", ".join(short_repr(records[i]) for i in bad[:MAX_ROWS_SHOWN])
        raise DataValidationError(f"{path}: rows {bad[:MAX_ROWS_SHOWN]} are not JSON objects: {shown}")
    return _records_to_columns(records)


def _read_csv_file(path: Path) -> Columns:
    """Read a CSV (or, for ``.tsv``, tab-separated) file as text (no NA guessing: an empty cell is
    ``""``); parse ``label`` words."""
    try:
        frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return {}
    columns: Columns = {name: frame[name].tolist() for name in frame.columns}
    if "label" in columns:
        columns["label"] = [_CSV_LABELS.get(v.strip().lower(), v) for v in columns["label"]]
    return columns


def _read_dataset_dir_columns(path: Path) -> tuple[str, Columns]:
    """Read ``path/data.jsonl`` after checking it against the ``sha256`` in ``path/manifest.json``."""
    data, manifest_path = path / DATA_FILE, path / MANIFEST_FILE
    for needed in (data, manifest_path):
        if not needed.is_file():
            raise DataValidationError(f"{path}: not a dataset dir: {needed.name} is missing")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    expected = manifest.get("sha256")
    if expected is None:
        log.warning("%s has no sha256: data.jsonl not checked", manifest_path)
    elif sha256_file(data) != expected:
        raise DataValidationError(f"{data}: sha256 differs from {manifest_path} (file changed after it was written)")
    return str(data), _read_json_file(data)


def _is_save_to_disk_dir(path: Path) -> bool:
    """Whether ``path`` holds a ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` folder."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_dataset_split(loaded: datasets.Dataset | datasets.DatasetDict, name: str, split: str) -> Columns:
    """Columns of ``loaded``, or of its ``split`` when it is a ``DatasetDict``."""
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataValidationError(f"{name}: no split {split!r} (splits: {', '.join(map(repr, loaded))})")
        loaded = loaded[split]
    return loaded.to_dict()


def _load_split_files(path: Path, split: str, config: str | None) -> tuple[str, str, Columns]:
    """A folder of split files (``train.jsonl``, ``test.parquet``, ...) read as ``trl kto --dataset_name`` reads it:
    ``datasets.load_dataset(folder)``, whose splits are named by the files."""
    name = f"{path} (split {split!r})"
    try:
        loaded = datasets.load_dataset(str(path), name=config)
    except (OSError, ValueError, DatasetsError) as err:
        raise DataValidationError(
            f"{path}: not a dataset dir ({DATA_FILE} + {MANIFEST_FILE}), a save_to_disk folder or a folder of split "
            f"files (train.jsonl, test.parquet, ...): {str(err).strip().splitlines()[0] if str(err).strip() else err!r}"
        ) from err
    return name, "split_files", _load_dataset_split(loaded, name, split)


def _load_columns(source: str, split: str, config: str | None = None) -> tuple[str, str, Columns]:
    """Read ``source`` into columns. Returns (name for messages, format, columns)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / DATA_FILE).is_file() and (path / split / DATA_FILE).is_file():
            path = path / split  # the output of `ktos split`: one dataset dir per split
        if (path / DATA_FILE).is_file():
            name, columns = _read_dataset_dir_columns(path)
            return name, "dataset_dir", columns
        if _is_save_to_disk_dir(path):
            name = f"{path} (split {split!r})"
            return name, "save_to_disk", _load_dataset_split(datasets.load_from_disk(str(path)), name, split)
        return _load_split_files(path, split, config)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in JSON_SUFFIXES:
            return str(path), "json", _read_json_file(path)
        if suffix in CSV_SUFFIXES:
            return str(path), suffix[1:], _read_csv_file(path)
        if suffix in PARQUET_SUFFIXES:
            return str(path), "parquet", pq.read_table(path).to_pydict()
        raise DataValidationError(
            f"{path}: unsupported file type {suffix!r} (use .jsonl, .json, .csv, .tsv or .parquet)"
        )
    if looks_like_path(source):
        raise DataValidationError(f"{source}: no such file or directory")
    name = f"hub dataset {source!r}" + (f" (config {config!r}, split {split!r})" if config else f" (split {split!r})")
    try:
        loaded = datasets.load_dataset(source, name=config, split=split)
    except (OSError, ValueError, DatasetsError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataValidationError(f"{name}: could not load: {first_line}") from err
    return name, "hub", _load_dataset_split(loaded, name, split)


def _unpair(source: str, columns: Columns) -> Columns:
    """Turn paired rows (prompt, chosen, rejected) into KTO rows: chosen -> True, rejected -> False.

    Pair ``i`` becomes rows ``2i`` (chosen) and ``2i + 1`` (rejected); texts are checked first so that
    errors name the rows of the paired source.
    """
    for name in PAIRED_COLUMNS:
        check_text(source, columns, name)
    n = len(columns["prompt"])
    log.info("%s: unpairing %d preference pairs into %d KTO rows", source, n, 2 * n)
    return {
        "prompt": [p for p in columns["prompt"] for _ in range(2)],
        "completion": [c for pair in zip(columns["chosen"], columns["rejected"], strict=True) for c in pair],
        "label": [True, False] * n,
    }


def _validate(source: str, columns: Columns, *, require_both_labels: bool) -> datasets.Dataset:
    """Validate ``columns`` and return a dataset of exactly (prompt, completion, label: bool)."""
    n = len(next(iter(columns.values()))) if columns else 0
    if n == 0:
        raise DataValidationError(f"{source}: no rows")
    if is_paired(columns):
        require_columns(source, columns, PAIRED_COLUMNS)
        columns = _unpair(source, columns)
    labels = checked_labels(source, columns, require_both_labels=require_both_labels)
    extra = [c for c in columns if c not in KTO_COLUMNS]
    if extra:
        log.info("%s: dropping columns %s", source, ", ".join(map(repr, extra)))
    return datasets.Dataset.from_dict(
        {"prompt": columns["prompt"], "completion": columns["completion"], "label": labels}
    )


# --------------------------------------------------------------------------------------------
# Public API


def load_source(
    source: str, split: str, config: str | None = None, *, require_both_labels: bool = True
) -> tuple[str, str, datasets.Dataset]:
    """Load and validate ``source`` as :func:`load_feedback` does. Returns (name for messages, format, dataset)."""
    name, fmt, columns = _load_columns(str(source), split, config)
    ds = _validate(name, columns, require_both_labels=require_both_labels)
    n_desirable = sum(ds["label"])
    log.info(
        "loaded %s (%s): %d rows, %d desirable, %d undesirable", name, fmt, len(ds), n_desirable, len(ds) - n_desirable
    )
    return name, fmt, ds


def load_feedback(
    source: str, *, split: str = "train", config: str | None = None, require_both_labels: bool = True
) -> datasets.Dataset:
    """Load and validate KTO feedback from a file, a folder or a hub dataset id (see the module doc); ``config``
    names a hub dataset's configuration (``datasets.load_dataset``'s ``name``).

    Returns a dataset with columns ``prompt``, ``completion`` and ``label`` (``bool``) holding both
    labels (one label is allowed with ``require_both_labels=False``, as for held-out data). Raises
    :class:`DataValidationError` for a missing source or column, empty or null text, labels other than bool or
    0/1, no rows, or one label only.
    """
    return load_source(source, split, config, require_both_labels=require_both_labels)[2]


def write_dataset_dir(ds: datasets.Dataset, out_dir: str | Path, **extra_manifest: Any) -> dict[str, Any]:
    """Write ``ds`` as a dataset dir and return its manifest.

    ``out_dir/data.jsonl`` holds one JSON object per row, keys ``prompt``, ``completion``, ``label``
    in that order, in the row order of ``ds`` (the order a TRL ``KTOTrainer`` batches them).
    ``out_dir/manifest.json`` holds ``rows``, ``desirable``, ``undesirable``, ``sha256`` (hex digest
    of ``data.jsonl``) and then ``extra_manifest``, whose keys must not repeat those four.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = ds.select_columns(list(KTO_COLUMNS)).to_dict()
    labels = [bool(v) for v in cols["label"]]
    data = out / DATA_FILE
    with data.open("w", encoding="utf-8", newline="\n") as fh:
        for prompt, completion, label in zip(cols["prompt"], cols["completion"], labels, strict=True):
            fh.write(
                json.dumps({"prompt": prompt, "completion": completion, "label": label}, ensure_ascii=False) + "\n"
            )
    manifest: dict[str, Any] = {
        "rows": len(labels),
        "desirable": sum(labels),
        "undesirable": len(labels) - sum(labels),
        "sha256": sha256_file(data),
    }
    clash = set(manifest) & set(extra_manifest)
    if clash:
        raise ValueError(f"extra manifest keys {sorted(clash)} would overwrite the computed ones")
    manifest.update(extra_manifest)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_dataset_dir(path: str | Path) -> datasets.Dataset:
    """Read a dataset dir written by :func:`write_dataset_dir` (rows in file order).

    Checks the ``sha256`` of ``data.jsonl`` against the manifest and validates the rows; one label
    only is allowed here (an eval split may hold one).
    """
    name, columns = _read_dataset_dir_columns(Path(path))
    return _validate(name, columns, require_both_labels=False)
