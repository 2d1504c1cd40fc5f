"""ktos: KTO and sign-corrected KTO-S trained from a base model with no SFT, on TRL.

The public API, imported lazily (``import ktos`` loads neither torch nor TRL until a name is used):

* :class:`KTOSConfig`, :class:`KTOSTrainer`: TRL's ``KTOConfig``/``KTOTrainer`` with KTO, KTO-S or KTO-zero;
* :func:`kto_loss`, :func:`gradient_weight`: the losses as pure functions;
* :class:`KLProbe`, :class:`ProbeCallback`: the held-out probe KL, logged through the trainer;
* :class:`PolicyKL`, :class:`PolicyKLCallback`: the policy's KL to the reference on its own samples;
* :func:`load_feedback`, :class:`DataValidationError`, :func:`check_feedback`: loading and validating binary feedback;
* :func:`class_weights`, :func:`interleave_order`: balancing desirable and undesirable examples;
* :func:`load_model_and_tokenizer`: a model and tokenizer from a hub id or a local path.
"""

from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import Any

try:
    __version__ = _metadata.version("ktos")  # pyproject.toml's version, read from the installed package's metadata
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "KTOSConfig": "config",
    "KTOSTrainer": "trainer",
    "kto_loss": "losses",
    "gradient_weight": "losses",
    "KLProbe": "probe",
    "ProbeCallback": "probe",
    "PolicyKL": "policy_kl",
    "PolicyKLCallback": "policy_kl",
    "load_feedback": "data",
    "DataValidationError": "validation",
    "check_feedback": "validation",
    "class_weights": "balance",
    "interleave_order": "balance",
    "load_model_and_tokenizer": "models",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'ktos' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
