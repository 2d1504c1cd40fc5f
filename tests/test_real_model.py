"""The config/paper.yaml path with a real architecture, offline: a small Qwen2 model with a byte-level BPE
tokenizer and a chat template, both built here (the tokenizer trained on the spot with `tokenizers`) and
saved as an ordinary model directory, trained with LoRA and precomputed reference log-probs on
conversational KTO data through the whole workflow."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import copy_workflow, snakemake, write_yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

pytestmark = pytest.mark.slow

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def conversations(n: int, seed: int = 0) -> list[dict]:
    """Conversational binary feedback: a user asks for a sum, the assistant answers right (desirable) or not."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randrange(10, 99), rng.randrange(10, 99)
        label = i % 3 != 2
        answer = a + b if label else a + b + rng.choice([-10, -1, 1, 9])
        rows.append({
            "prompt": [{"role": "user", "content": f"What is {a} plus {b}?"}],
            "completion": [{"role": "assistant", "content": f"It is {answer}."}],
            "label": label,
        })  # fmt: skip
    return rows


def build_qwen2(path: Path, corpus: list[str]) -> Path:
    """A 2-layer Qwen2 and a byte-level BPE tokenizer (vocabulary 512) trained on ``corpus``, saved to ``path``."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_paper_config_path_with_a_qwen2_model_on_conversational_data(tmp_path: Path) -> None:
    rows = conversations(96)
    corpus = [CHAT_TEMPLATE.replace("{", "").replace("}", "")] + [
        f"<|im_start|>user\n{r['prompt'][0]['content']}<|im_end|>\n<|im_start|>assistant\n{r['completion'][0]['content']}<|im_end|>"
        for r in rows
    ]
    model_dir = build_qwen2(tmp_path / "qwen2-tiny", corpus)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    assert tokenizer.apply_chat_template(rows[0]["prompt"], tokenize=False, add_generation_prompt=True).startswith(
        "<|im_start|>user"
    )

    repo = copy_workflow(tmp_path / "repo")
    data = repo / "data" / "feedback.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overlay = write_yaml(repo / "local.yaml", {
        "study": "paper_local",
        "seeds": [0],
        "learning_rates": [5.0e-6],
        "headline": {"lr": 5.0e-6},
        "data": {"source": "data/feedback.jsonl", "eval_fraction": 0.25},
        "model": {"name_or_path": str(model_dir),
                  "peft": {"use_peft": True, "lora_r": 4, "lora_alpha": 8,
                           "lora_target_modules": ["q_proj", "v_proj"]}},
        "train": {
            "max_steps": 3, "bf16": False, "per_device_train_batch_size": 4, "kl_probe_size": 8,
            "precompute_ref_log_probs": True,
            "extra_args": {"gradient_accumulation_steps": 1, "max_length": 128, "gradient_checkpointing": False},
        },
        "resources": {"gpu": 0, "partition": None, "threads": 1, "mem_mb": 2000, "runtime": 10},
        "analysis": {"window": 2, "phase_end": None},  # within the 3 steps (the workflow refuses steps past them)
    })  # fmt: skip
    result = snakemake(repo, "--cores", "2", "--configfile", "config/paper.yaml", overlay)
    assert result.returncode == 0, result.stdout[-4000:]
    table = pd.read_csv(repo / "results/studies/paper_local/trajectories.csv.gz")
    assert sorted(table["method"].unique()) == ["kto", "kto_s"] and (table["status"] == "completed").all()
    assert table["probe_kl"].notna().any()
    info = json.loads((repo / "results/runs/paper_local/main/kto_s_lr5e-6_seed0/run_info.json").read_text())
    assert info["quality"]["metric"] == "preference_accuracy" and info["model"]["model_name_or_path"] == str(model_dir)
    assert info["model"]["use_peft"] is True and info["model"]["lora_target_modules"] == ["q_proj", "v_proj"]
    assert info["config"]["precompute_ref_log_probs"] is True
    assert (repo / "results/studies/paper_local/figures/fig3_kto_s_kl.png").stat().st_size > 0
