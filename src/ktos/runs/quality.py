"""A run's quality measures: what ``ktos train`` measures on held-out data, set up before training.

* On held-out ``{"prompt", "answer"}`` items, a task's own evaluation handed in as a :class:`TaskEval` (the
  command line hands in the toy's, :data:`ktos.toy.quality.TASK`): the library never imports a task.
* :class:`PreferenceAccuracy`: on held-out binary feedback, the share of examples whose implied reward
  ``r = log pi_theta(y|x) - log pi_ref(y|x)`` has the label's sign (desirable ``r > 0``, undesirable ``r < 0``;
  ties count as wrong). For data without reference answers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from datasets import Dataset

from .. import compat
from ..models import load_model_and_tokenizer
from ..probe import completion_logps, heldout_batches

#: The two halves of held-out items a task's evaluation reports beside the whole: ``val`` (items 0, 2, 4, ...: for
#: choosing, such as a checkpoint) and ``test`` (items 1, 3, 5, ...: for reporting what was chosen).
HALVES: tuple[str, ...] = ("val", "test")
#: A quality measure's keys -> the step metrics they are logged as: the value (a fraction), the held-out halves'
#: values, and the correct answer's mean log-probability (nats).
STEP_METRICS: dict[str, str] = {
    "value": "step_quality",
    **{f"value_{h}": f"step_quality_{h}" for h in HALVES},
    "logprob": "step_quality_logprob",
}


class TaskEval(NamedTuple):
    """A task's evaluation on held-out items: ``load_items(path)`` reads them, ``accuracy(model, tokenizer, items)``
    returns ``{"metric", "value", ...}`` (optionally the keys of :data:`STEP_METRICS` and ``correct``)."""

    load_items: Callable[[str], Sequence[dict]]
    accuracy: Callable[..., dict[str, Any]]


def quality_measure(
    trainer: Any, heldout: str | None, eval_dataset: Dataset | None, task: TaskEval | None
) -> Callable[[], dict[str, Any]] | None:
    """What measures the run's quality, set up before training: ``task``'s accuracy on the ``heldout`` items when
    given, else preference accuracy on the eval split (its reference log-probs taken now), else nothing."""
    if heldout:
        if task is None:
            raise ValueError("held-out task items were given but no task evaluation to score them (TaskEval)")
        items = task.load_items(heldout)
        return lambda: task.accuracy(trainer.model, trainer.processing_class, items)
    if eval_dataset is not None:
        return PreferenceAccuracy(trainer, eval_dataset).measure
    return None


@functools.cache
def base_task_accuracy(model_name_or_path: str, heldout: str, task: TaskEval) -> dict[str, Any]:
    """``task``'s accuracy of the base model itself, measured once per process and (model, held-out set)."""
    model, tokenizer = load_model_and_tokenizer(model_name_or_path)
    return task.accuracy(model, tokenizer, task.load_items(heldout))


class PreferenceAccuracy:
    """Preference accuracy on held-out feedback: reference log-probs are measured at construction (before
    training, so that it also works when the trainer keeps no reference model), the policy's at each call."""

    def __init__(self, trainer: Any, dataset: Dataset) -> None:
        self.trainer = trainer
        self.batches = heldout_batches(trainer, dataset, "preference_eval")
        with compat.reference_model(trainer) as ref:
            self.reference = [completion_logps(trainer, ref, b, "completion") for b in self.batches]

    def measure(self) -> dict[str, Any]:
        """Share of rows whose implied reward has the label's sign (ties count as wrong)."""
        correct = total = 0
        for batch, reference in zip(self.batches, self.reference, strict=True):
            r = completion_logps(self.trainer, self.trainer.model, batch, "completion") - reference
            labels = compat.labels(batch)
            correct += int(torch.where(labels, r > 0, r < 0).sum())
            total += len(labels)
        return {"metric": "preference_accuracy", "value": correct / max(total, 1), "n": total}
