"""Validation of KTO feedback, shared by :func:`ktos.data.load_feedback` (``ktos train``) and
:class:`ktos.trainer.KTOSTrainer` (:func:`check_feedback`): every problem is a :class:`DataValidationError` whose
message is one line naming the source, the column and the first offending rows."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import datasets

#: Columns of a KTO dataset, in the order they are written.
KTO_COLUMNS: tuple[str, str, str] = ("prompt", "completion", "label")
#: Columns of a paired preference dataset (unpaired by :func:`ktos.data.load_feedback`, and by TRL).
PAIRED_COLUMNS: tuple[str, str, str] = ("prompt", "chosen", "rejected")
#: How many offending rows (and their values) an error message shows.
MAX_ROWS_SHOWN = 5

Columns = dict[str, list[Any]]


class DataValidationError(ValueError):
    """The input data cannot be used; the message is one line naming source, column and rows."""


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr`` of ``value`` on one line, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def row_error(
    source: str, column: str, problem: str, rows: Sequence[int], values: Sequence[Any]
) -> DataValidationError:
    """Build the one-line error for ``rows`` (0-based) of ``column`` holding bad ``values``."""
    shown = list(rows[:MAX_ROWS_SHOWN])
    more = f" (and {len(rows) - len(shown)} more)" if len(rows) > len(shown) else ""
    vals = ", ".join(short_repr(v) for v in values[:MAX_ROWS_SHOWN])
    return DataValidationError(f"{source}: column {column!r}: {problem} at rows {shown}{more}: {vals}")


def _is_bad_text(value: Any) -> bool:
    """Whether ``value`` is not usable as a prompt or completion.

    Good: a string with a non-blank character, or a non-empty list of messages, each a dict with a
    string ``role`` and a non-blank string ``content`` (conversational form).
    """
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value or not all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            and m["content"].strip()
            for m in value
        )
    return True


def check_text(source: str, columns: Columns, column: str) -> None:
    """Raise on null, blank or non-text values of a text column."""
    bad = [i for i, v in enumerate(columns[column]) if _is_bad_text(v)]
    if bad:
        raise row_error(source, column, "empty, null or non-text values", bad, [columns[column][i] for i in bad])


def _is_label(value: Any) -> bool:
    """Whether ``value`` is a label TRL trains on: a bool, or the number 0 or 1 (int or float, numpy's included)."""
    if isinstance(value, bool):
        return True
    try:
        return not isinstance(value, str) and value in (0, 1)
    except (TypeError, ValueError):  # an array or another value that does not compare with a number
        return False


def normalise_labels(source: str, values: Sequence[Any], *, require_both: bool) -> list[bool]:
    """Labels as Python bools: ``True``/``False`` as they are, the numbers ``1``/``0`` (``1.0``/``0.0`` too, as TRL
    accepts them) converted; others raise.

    With ``require_both``, labels of one kind only raise too: KTO's loss needs desirable and
    undesirable examples. Errors are :class:`DataValidationError` naming ``source``, the column and rows.
    """
    out: list[bool] = []
    bad: list[int] = []
    for i, v in enumerate(values):
        if _is_label(v):
            out.append(bool(v))
        else:
            bad.append(i)
    if bad:
        raise row_error(source, "label", "values that are not bool or 0/1", bad, [values[i] for i in bad])
    n_desirable = sum(out)
    if require_both and n_desirable in (0, len(out)):
        present, missing = ("desirable (True)", "undesirable (False)")[:: 1 if n_desirable else -1]
        raise DataValidationError(
            f"{source}: column 'label': all {len(out)} rows are {present}, none {missing}; KTO needs both labels"
        )
    return out


def require_columns(source: str, columns: Collection[str], needed: Sequence[str]) -> None:
    """Raise naming the first missing column and the columns present."""
    for name in needed:
        if name not in columns:
            present = ", ".join(map(repr, columns)) or "none"
            raise DataValidationError(f"{source}: missing column {name!r} (columns present: {present})")


def is_paired(columns: Any) -> bool:
    """Whether column names (or columns) are a paired preference dataset's: ``chosen``, ``rejected``, no ``label``."""
    return "label" not in columns and "chosen" in columns and "rejected" in columns


def checked_labels(source: str, columns: Columns, *, require_both_labels: bool) -> list[bool]:
    """Check a KTO dataset's columns (present, texts non-empty, labels bool or 0/1, both labels if required) and
    return its labels as bools; :class:`DataValidationError` names the column and rows of the first problem."""
    require_columns(source, columns, KTO_COLUMNS)
    for name in ("prompt", "completion"):
        check_text(source, columns, name)
    return normalise_labels(source, columns["label"], require_both=require_both_labels)


def check_feedback(
    dataset: datasets.Dataset, *, name: str = "train", require_both_labels: bool = True
) -> datasets.Dataset:
    """``dataset`` checked as :func:`load_feedback` checks what it loads, before TRL sees it; ``ktos.KTOSTrainer``
    calls it on its train (both labels required) and eval datasets.

    A KTO dataset needs ``prompt``, ``completion`` and ``label`` (texts or conversations not empty, labels bool or
    0/1); a paired one (``prompt``, ``chosen``, ``rejected``, which TRL unpairs) non-empty texts. Other columns
    stay. Returns the dataset with ``label`` as Python bools (the same dataset when it already was); raises
    :class:`DataValidationError` naming the dataset, the column and the first offending rows. An
    ``IterableDataset`` is returned unchecked (reading it would consume it).
    """
    if not isinstance(dataset, datasets.Dataset):
        return dataset
    source = f"{name} dataset"
    if len(dataset) == 0:
        raise DataValidationError(f"{source}: no rows")
    present = dataset.column_names
    needed = PAIRED_COLUMNS if is_paired(present) else KTO_COLUMNS
    require_columns(source, present, needed)
    columns: Columns = {column: dataset[column] for column in needed}
    if is_paired(present):
        for column in PAIRED_COLUMNS:
            check_text(source, columns, column)
        return dataset
    labels = checked_labels(source, columns, require_both_labels=require_both_labels)
    if any(not isinstance(v, bool) for v in columns["label"]):
        dataset = dataset.remove_columns("label").add_column("label", labels)
    return dataset
