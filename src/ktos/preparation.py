"""How the training set reaches TRL's trainer: prepared once per process, and read in file order.

Neither is a TRL internal: :class:`ktos.trainer.KTOSTrainer` overrides TRL's ``_prepare_dataset`` and
``_get_train_sampler`` with these.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import SequentialSampler

from .loss_types import TRL_COMPUTED

#: TRL's prepared (tokenised, KL-paired) datasets of this process, by what determines them.
_PREPARED: dict[tuple, Any] = {}


def cached_prepare(prepare: Any, dataset: Any, processing_class: Any, args: Any, name: str) -> Any:
    """``prepare(dataset, processing_class, args, name)`` (TRL's ``_prepare_dataset``), once per process for
    the same data (its content fingerprint), tokenizer and the settings that shape the result (whether TRL builds
    KL pairs included); a training
    job that trains several runs on the same data tokenises it once. Prepared datasets are immutable."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint is None:
        return prepare(dataset, processing_class, args, name)
    key = (
        fingerprint,
        name,
        getattr(processing_class, "name_or_path", None),
        len(processing_class),
        hash(getattr(processing_class, "chat_template", None)),
        args.max_length,
        args.per_device_train_batch_size,
        getattr(args, "precompute_ref_log_probs", False),
        getattr(args, "loss_type", None) in TRL_COMPUTED,  # TRL builds no KL pairs for these (apo_zero_unpaired)
    )
    if key not in _PREPARED:
        _PREPARED[key] = prepare(dataset, processing_class, args, name)
    return _PREPARED[key]


def train_sampler(dataset: Any) -> SequentialSampler:
    """The training set in file order: the balance stage writes the batch order, and TRL builds each
    example's mismatched KL completion from its neighbours in that order."""
    return SequentialSampler(dataset)
