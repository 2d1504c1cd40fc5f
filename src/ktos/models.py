"""Load causal language models and tokenizers, or build tiny ones offline.

One code path loads a model by hub id or local directory (:func:`load_model_and_tokenizer`).
The tiny builders (:func:`build_tiny_tokenizer`, :func:`build_tiny_model`) need no network and
make the models used by the tests and by the embedded default: a character-level tokenizer and a
small Llama-architecture decoder.
"""

from __future__ import annotations

import logging
import os
import string
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
#: Characters the tiny tokenizer knows: printable ASCII (letters, digits, punctuation, space, newline).
TINY_ALPHABET: str = "".join(sorted(set(string.printable) - set("\t\r\x0b\x0c")))


def build_tiny_tokenizer(alphabet: str = TINY_ALPHABET) -> PreTrainedTokenizerFast:
    """A character-level tokenizer built with ``tokenizers``, without downloads.

    Each character of ``alphabet`` is one token; ``<pad>``, ``<s>``, ``</s>`` and ``<unk>`` are
    special tokens, so ``"...</s>"`` tokenizes the EOS marker as one id (TRL appends it as text).
    Tokenizing is prefix-stable (the ids of ``prompt`` are a prefix of the ids of
    ``prompt + completion``), which TRL's ``KTOTrainer`` relies on.
    """
    specials = [PAD, BOS, EOS, UNK]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
    )
    return tok


def build_tiny_model(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 256,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama-architecture causal LM sized for CPU tests (about 0.1M params by default).

    ``seed`` fixes the initial weights.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def save_tiny(path: str | Path, *, seed: int = 0, **model_kwargs: int) -> Path:
    """Build a tiny tokenizer and model and save both to ``path`` (a directory loadable by
    :func:`load_model_and_tokenizer`). Returns the path."""
    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed, **model_kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


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
    without a pad token gets its EOS token as pad, and padding goes on the left as TRL expects. With ``HF_HUB_OFFLINE=1`` a hub id
    loads only from the local cache; a missing model gives an error that says so.
    """
    looks_local = os.path.sep in name_or_path or name_or_path.startswith(".")
    if looks_local and not Path(name_or_path).is_dir():
        raise FileNotFoundError(f"model directory not found: {name_or_path}")
    kwargs: dict = {"trust_remote_code": trust_remote_code, "revision": revision}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        extra = {k: v for k, v in model_kwargs.items() if v is not None}
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype or "auto", **kwargs, **extra)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = " (HF_HUB_OFFLINE is set: only local directories and cached hub models load)" if offline else ""
        raise OSError(f"could not load model {name_or_path!r}{hint}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    n_params = sum(p.numel() for p in model.parameters())
    log.info("loaded %s (%s, %.2fM parameters)", name_or_path, type(model).__name__, n_params / 1e6)
    return model, tokenizer
