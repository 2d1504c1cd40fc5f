"""How the training set reaches TRL's trainer: prepared once per process (:class:`ktos.trainer.KTOSTrainer`
overrides TRL's ``_prepare_dataset`` with :func:`cached_prepare`). It is read in file order through TRL's and
transformers' own ``train_sampling_strategy="sequential"``, which ``KTOSConfig`` sets on every TRL."""

from __future__ import annotations

from typing import Any

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
