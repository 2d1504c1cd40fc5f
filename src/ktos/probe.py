"""The KL probe: KL to the reference model on fixed held-out data, measured during training.

:class:`KLProbe` measures the KL from policy to reference on a fixed set of mismatched prompt/completion
pairs, built exactly as TRL builds the pairs behind its logged ``kl`` (completions rotated by one inside
each chunk of ``per_device_train_batch_size``), so the units match: sequence-level nats,
``mean_i [log pi_theta(y'_i|x_i) - log pi_ref(y'_i|x_i)]``. Unlike TRL's value it is not clamped at 0,
and it is also reported per completion token. :func:`heldout_batches` and :func:`completion_logps` are
shared with :func:`ktos.quality.preference_accuracy`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from datasets import Dataset

from . import compat

log = logging.getLogger(__name__)


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
        self.batches = heldout_batches(trainer, dataset.select(range(min(size, len(dataset)))), "kl_probe")
        self.n_pairs = sum(len(b["label"]) for b in self.batches)
        self.n_tokens = int(sum(compat.sequence(b, "KL")[2][:, 1:].sum() for b in self.batches))
        with compat.reference_model(trainer) as ref:
            self._reference_logps = self._logps(ref)

    def _logps(self, model: torch.nn.Module) -> torch.Tensor:
        return torch.cat([completion_logps(self.trainer, model, b, "KL") for b in self.batches])

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
