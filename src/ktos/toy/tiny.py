"""The embedded default's tiny models, built offline: a character-level tokenizer and a small Llama decoder.

They need no network and make the models used by the tests, the benchmarks and the embedded default's
pretraining (:mod:`ktos.toy.task.pretrain`). :func:`save_tiny` writes one to a directory that
:func:`ktos.models.load_model_and_tokenizer` loads like any other model.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

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
    :func:`ktos.models.load_model_and_tokenizer`). Returns the path."""
    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed, **model_kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
