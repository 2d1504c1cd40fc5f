"""The KL probe: KL to the reference model on fixed held-out data, measured during training.

:class:`KLProbe` measures the KL from policy to reference on a fixed set of mismatched prompt/completion
pairs, built as TRL builds the pairs behind its logged ``kl`` (completions rotated by one inside each chunk of
``per_device_train_batch_size``: :func:`mismatched`), whatever the loss type, so the units match: sequence-level nats,
``mean_i [log pi_theta(y'_i|x_i) - log pi_ref(y'_i|x_i)]``. Unlike TRL's value it is not clamped at 0,
and it is also reported per completion token. :func:`heldout_batches` and :func:`completion_logps` are
shared with :func:`ktos.toy.quality.preference_accuracy`. :class:`ProbeCallback` measures it during training and logs
it through the trainer's ``log``, so ``trainer_state.json`` and every ``report_to`` tracker carry it at its steps.
:class:`ktos.trainer.KTOSTrainer` builds both itself when ``kl_probe_size > 0`` (data: :func:`probe_dataset`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainerCallback, TrainerControl, TrainerState

from . import compat
from .data import load_feedback

log = logging.getLogger(__name__)


def probe_dataset(args: Any, eval_dataset: Dataset | dict[str, Dataset] | None) -> Dataset | None:
    """The probe's held-out data for a ``KTOSConfig``: none when ``kl_probe_size`` is 0, else the source
    ``kl_probe_dataset`` names (loaded by :func:`ktos.data.load_feedback`, one label allowed), else ``eval_dataset``
    (the first of a dict of them), else none: with the probe's default size and interval one WARNING says it is
    off, and a probe asked for explicitly (``args.probe_asked``) raises ``ValueError``."""
    if args.kl_probe_size == 0:
        return None
    held_out = heldout_dataset(args, eval_dataset)
    if held_out is None:
        if getattr(args, "probe_asked", False):
            raise ValueError(
                f"kl_probe_size={args.kl_probe_size}, kl_probe_steps={args.kl_probe_steps} ask for the KL probe, but "
                "there is no held-out data to build it from: give an eval_dataset (ktos train: --eval_data) or "
                "kl_probe_dataset, or set kl_probe_size=0"
            )
        log.warning(
            "KL probe off: no eval_dataset and no kl_probe_dataset to build it from; give either to measure "
            "probe_kl (kl_probe_size=0 turns the probe off without this warning)"
        )
    return held_out


def heldout_dataset(args: Any, eval_dataset: Dataset | dict[str, Dataset] | None) -> Dataset | None:
    """The held-out data of a ``KTOSConfig`` whatever ``kl_probe_size``: the source ``kl_probe_dataset`` names, else
    ``eval_dataset`` (the first of a dict of them), else none. Shared by the probe and :mod:`ktos.policy_kl`."""
    if args.kl_probe_dataset:
        return load_feedback(args.kl_probe_dataset, require_both_labels=False)
    if isinstance(eval_dataset, dict):
        eval_dataset = next(iter(eval_dataset.values()), None)
    return eval_dataset


def mismatched(dataset: Dataset, chunk: int) -> Dataset:
    """``dataset`` with each row's completion replaced by its predecessor's within consecutive chunks of ``chunk``
    rows (a chunk's first row takes its last row's): TRL's mismatched KL pairs ``(x_i, y_{i-1})``."""
    completions = dataset["completion"]
    rotated = [
        completions[start + (i - 1) % len(completions[start : start + chunk])]
        for start in range(0, len(completions), chunk)
        for i in range(len(completions[start : start + chunk]))
    ]
    return dataset.remove_columns("completion").add_column("completion", rotated)


def heldout_batches(trainer: Any, dataset: Dataset, name: str) -> list[dict[str, Any]]:
    """Tokenise ``dataset`` as the trainer does (with KL pairs) and collate it into fixed batches."""
    prepared = compat.prepare_dataset(trainer, dataset, name)
    size = trainer.args.per_device_train_batch_size
    return [
        trainer.data_collator([prepared[i] for i in range(start, min(start + size, len(prepared)))])
        for start in range(0, len(prepared), size)
    ]


def completion_logps(trainer: Any, model: torch.nn.Module, batch: dict[str, Any], kind: str) -> torch.Tensor:
    """Summed log-probs of the batch's ``kind`` (``"completion"`` or ``"KL"``) completions under ``model``."""
    device = trainer.accelerator.device
    with torch.no_grad():
        ids, attention, mask = (t.to(device) for t in compat.sequence(batch, kind))
        return compat.sequence_logps(model, ids, attention, mask).float().cpu()


class KLProbe:
    """KL to the reference model on fixed held-out mismatched pairs (see module docstring)."""

    def __init__(self, trainer: Any, dataset: Dataset, size: int) -> None:
        if len(dataset) < size:
            log.warning("KL probe: asked for %d pairs, the held-out set has %d; using all of it", size, len(dataset))
        self.trainer = trainer
        pairs = mismatched(dataset.select(range(min(size, len(dataset)))), trainer.args.per_device_train_batch_size)
        self.batches = heldout_batches(trainer, pairs, "kl_probe")
        self.n_pairs = sum(len(b["label"]) for b in self.batches)
        self.n_tokens = int(sum(compat.sequence(b, "completion")[2][:, 1:].sum() for b in self.batches))
        with compat.reference_model(trainer) as ref:
            self._reference_logps = self._logps(ref)
        log.info("KL probe: %d held-out mismatched pairs (%d completion tokens)", self.n_pairs, self.n_tokens)

    def _logps(self, model: torch.nn.Module) -> torch.Tensor:
        return torch.cat([completion_logps(self.trainer, model, b, "completion") for b in self.batches])

    def measure(self) -> dict[str, float]:
        """The current policy's probe KL: ``probe_kl`` (nats per sequence, the mean over the pairs),
        ``probe_kl_se`` (its standard error, the pairs' sample standard deviation over sqrt(n)) and
        ``probe_kl_per_token`` (nats per completion token)."""
        diff = self._logps(self.trainer.model) - self._reference_logps
        return {
            "probe_kl": float(diff.mean()),
            "probe_kl_se": float(diff.std() / len(diff) ** 0.5) if len(diff) > 1 else float("nan"),
            "probe_kl_per_token": float(diff.sum() / max(self.n_tokens, 1)),
        }


class ProbeCallback(TrainerCallback):
    """Measures the KL probe after optimizer steps and logs its values with the step.

    The probe is measured at step 1, every ``every``-th step and the last; ``extra = (steps, measure)``
    also calls ``measure()`` (named values, such as task accuracy) at ``steps``. The values go to
    ``trainer.log_step_metrics`` (:class:`ktos.trainer.KTOSTrainer`) and the step is logged even between
    ``logging_steps``, so its log (``log_history``, every ``report_to`` tracker, the callbacks' ``on_log``)
    holds them. Every process measures (a sharded model needs all ranks).
    """

    def __init__(
        self,
        trainer: Any,
        probe: KLProbe | None,
        every: int = 1,
        extra: tuple[Sequence[int], Callable[[], dict[str, float]]] | None = None,
    ) -> None:
        self.trainer = trainer
        self.probe = probe
        self.every = every
        self.extra_steps: Sequence[int] = extra[0] if extra else ()
        self.measure_extra: Callable[[], dict[str, float]] | None = extra[1] if extra else None

    def add_extra(self, extra: tuple[Sequence[int], Callable[[], dict[str, float]]]) -> None:
        """Also call ``measure()`` at ``steps`` (``extra = (steps, measure)``), as if given at construction (one
        callback, so transformers sees no second ``ProbeCallback``); one extra per callback."""
        if self.measure_extra is not None:
            raise ValueError("this ProbeCallback already measures an extra")
        self.extra_steps, self.measure_extra = extra

    def is_probe_step(self, step: int, max_steps: int) -> bool:
        """Whether the probe is measured after optimizer step ``step`` (1-based) of ``max_steps``."""
        return self.probe is not None and (step == 1 or step % self.every == 0 or step == max_steps)

    def on_step_end(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        step = state.global_step
        measured: dict[str, float] = {}
        if self.probe is not None and self.is_probe_step(step, state.max_steps):
            measured.update(self.probe.measure())
        if self.measure_extra is not None and step in self.extra_steps:
            measured.update(self.measure_extra())
        if measured:
            self.trainer.log_step_metrics(measured)
            control.should_log = True
