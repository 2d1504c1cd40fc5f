"""Load a causal language model and its tokenizer from a hub id or a local directory (one code path).

The tiny models the tests and the embedded default use are built in :mod:`ktos.toy.tiny`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .sources import looks_like_path

log = logging.getLogger(__name__)


def load_model_and_tokenizer(
    name_or_path: str,
    *,
    trust_remote_code: bool = False,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a hub id or a local directory (one code path).

    ``model_kwargs`` (``attn_implementation``, ``quantization_config``, ``device_map``; ``None`` values are
    dropped) go to ``from_pretrained``. ``trust_remote_code`` stays off unless asked for. A tokenizer
    without a pad token gets its EOS token as pad, and padding goes on the left as TRL expects. With
    ``HF_HUB_OFFLINE=1`` a hub id loads only from the local cache; one not there raises ``FileNotFoundError``
    saying so (a missing local directory: "model directory not found").
    """
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if not Path(name_or_path).expanduser().is_dir():
        if looks_like_path(name_or_path):
            raise FileNotFoundError(f"model directory not found: {name_or_path}")
        if offline and not _cached(name_or_path, revision):
            raise FileNotFoundError(
                f"model {name_or_path!r} is not a local directory and not in the local Hugging Face cache, and "
                "HF_HUB_OFFLINE is set: download it first (unset HF_HUB_OFFLINE) or give a local directory"
            )
    kwargs: dict = {"trust_remote_code": trust_remote_code, "revision": revision}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        extra = {k: v for k, v in model_kwargs.items() if v is not None}
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype or "auto", **kwargs, **extra)
    except OSError as err:
        hint = " (HF_HUB_OFFLINE is set: only local directories and cached hub models load)" if offline else ""
        raise OSError(f"could not load model {name_or_path!r}{hint}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    n_params = sum(p.numel() for p in model.parameters())
    log.info("loaded %s (%s, %.2fM parameters)", name_or_path, type(model).__name__, n_params / 1e6)
    return model, tokenizer


def _cached(repo_id: str, revision: str | None) -> bool:
    """Whether the hub model ``repo_id`` has a ``config.json`` in the local Hugging Face cache."""
    from transformers.utils import cached_file

    try:  # OSError: not in the cache (offline, no download); ValueError: not a valid repo id
        return cached_file(repo_id, "config.json", revision=revision, local_files_only=True) is not None
    except (OSError, ValueError):
        return False
