r"""Policy KL: the KL from the current policy to the reference model on the policy's own samples.

On fixed held-out prompts ``x_1..x_n`` (:func:`heldout_prompts`), :class:`PolicyKL` samples one completion
``y_i ~ pi_theta(.|x_i)`` per prompt (temperature 1, at most ``max_new_tokens`` tokens, ending at EOS) and scores

.. math::

    k_i = \sum_{t \le |y_i|} \mathrm{KL}\big(\pi_\theta(\cdot|x_i, y_{i,<t}) \,\|\, \pi_{ref}(\cdot|x_i, y_{i,<t})\big)
        = \sum_t \sum_v p_v (\log p_v - \log q_v),

the exact per-token KL over the whole vocabulary (float32, from both models' log-softmax) summed over the sampled
positions (the position that sampled EOS counts, those after it do not). By the chain rule of the KL,
``E_{y ~ pi_theta}[k_i] = KL(pi_theta(.|x_i) || pi_ref(.|x_i))`` over sequences of at most ``max_new_tokens``
tokens: the Rao-Blackwellised estimator of the sequence KL, unbiased, and never negative (each term is a KL).
``policy_kl`` is ``mean_i k_i`` in nats per sequence, ``policy_kl_se`` its standard error (sample standard
deviation over sqrt(n)), ``policy_kl_tokens`` the mean sampled length.

Sampling uses its own ``torch.Generator`` seeded with the same seed at every measurement: the same noise at every
step (common random numbers, so step-to-step changes are not sampling noise) and no draw from the global RNG, so
training with the measurement is bit-identical to training without it. The sampler re-runs the policy on the whole
prefix for each new token (no KV cache; left-padded batches of ``per_device_eval_batch_size`` prompts with explicit
position ids), then one forward pass of the policy and one of the reference (:func:`ktos.compat.reference_model`:
the ``ref_model``, or a PEFT policy with its adapter off) score the sampled sequences. Cost per measurement: about
``size * max_new_tokens`` policy forward steps on growing prefixes plus one policy and one reference pass over the
sampled sequences (docs/methods.md, benchmarks/policy_kl_cost.py). :class:`PolicyKLCallback` measures it after
optimizer steps and logs it through the trainer's ``log_step_metrics``; :class:`ktos.trainer.KTOSTrainer` builds both
itself when ``policy_kl_size > 0``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainerCallback, TrainerControl, TrainerState

from . import compat

log = logging.getLogger(__name__)

#: A prompt as TRL takes it: text, or (conversational data) a list of chat messages.
Prompt = str | list[dict[str, Any]]


def heldout_prompts(dataset: Dataset, size: int) -> list[Prompt]:
    """The first ``size`` distinct prompts of ``dataset`` (its ``prompt`` column), in order."""
    seen: set[str] = set()
    prompts: list[Prompt] = []
    for prompt in dataset["prompt"]:
        key = json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            prompts.append(prompt)
        if len(prompts) == size:
            break
    if len(prompts) < size:
        log.warning("policy KL: asked for %d prompts, the held-out set has %d distinct ones", size, len(prompts))
    return prompts


def tokenize_prompt(processing_class: Any, prompt: Prompt) -> list[int]:
    """``prompt``'s ids as TRL's ``KTOTrainer`` tokenises prompts: the chat template with the generation prompt for
    conversational data (a list of messages), else the tokenizer called on the text."""
    if isinstance(prompt, list):
        ids = processing_class.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        return list(ids["input_ids"])
    return list(processing_class(text=prompt)["input_ids"])


def _positions(attention: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: 0 at each row's first real token."""
    return (attention.cumsum(-1) - 1).clamp(min=0)


def _logits(model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=attention, position_ids=_positions(attention), use_cache=False).logits


class PolicyKL:
    """The policy's KL to the reference model on its own samples from fixed held-out prompts (module docstring).

    ``trainer`` gives the policy (``trainer.model``), the reference (:func:`ktos.compat.reference_model`), the
    tokenizer (``processing_class``) and the device; ``seed`` defaults to ``trainer.args.seed``.
    """

    def __init__(
        self,
        trainer: Any,
        prompts: Sequence[Prompt],
        max_new_tokens: int = 32,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        if not prompts:
            raise ValueError("policy KL needs at least one prompt")
        self.trainer = trainer
        self.max_new_tokens = max_new_tokens
        self.seed = trainer.args.seed if seed is None else seed
        self.batch_size = batch_size or trainer.args.per_device_eval_batch_size
        tokenizer = trainer.processing_class
        self.tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
        self.eos_id = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        self.pad_id = self.eos_id if pad is None else pad
        limit = trainer.args.max_length - max_new_tokens if trainer.args.max_length else None
        self.prompt_ids = [tokenize_prompt(tokenizer, p) for p in prompts]
        if limit is not None and limit > 0:
            self.prompt_ids = [ids[-limit:] for ids in self.prompt_ids]  # keep the end, next to the completion
        log.info("policy KL: %d held-out prompts, up to %d new tokens", len(self.prompt_ids), max_new_tokens)

    def _batch(self, rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            attention[i, width - len(r) :] = 1
        return ids.to(device), attention.to(device)

    def _sample(
        self, model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``ids`` and ``attention`` extended by one sampled completion per row, and the sampled positions' mask."""
        alive = torch.ones(ids.size(0), dtype=torch.bool, device=ids.device)
        sampled = []
        for _ in range(self.max_new_tokens):
            probs = torch.softmax(_logits(model, ids, attention)[:, -1].float(), -1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            token = torch.where(alive, token, torch.full_like(token, self.pad_id))
            ids = torch.cat([ids, token[:, None]], 1)
            attention = torch.cat([attention, alive[:, None].long()], 1)
            sampled.append(alive)
            alive = alive & (token != self.eos_id)
            if not alive.any():
                break
        return ids, attention, torch.stack(sampled, 1)

    def sequence_kls(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each prompt's ``k_i`` (nats, float32, on the CPU) and its sampled length, from one fresh draw with the
        fixed seed. The model is put in eval mode meanwhile (and back in train mode if it was)."""
        model = self.trainer.model
        device = self.trainer.accelerator.device
        generator = torch.Generator(device=device).manual_seed(self.seed)
        training = model.training
        model.eval()
        kls, lengths = [], []
        try:
            with torch.no_grad():
                for start in range(0, len(self.prompt_ids), self.batch_size):
                    ids, attention = self._batch(self.prompt_ids[start : start + self.batch_size], device)
                    width = ids.size(1)
                    ids, attention, mask = self._sample(model, ids, attention, generator)
                    steps = mask.size(1)
                    # logits at width-1+t predict the token sampled at width+t
                    scored = slice(width - 1, width - 1 + steps)
                    logp = torch.log_softmax(_logits(model, ids, attention)[:, scored].float(), -1)
                    with compat.reference_model(self.trainer) as ref:
                        ref_logits = _logits(ref, ids, attention)[:, scored]
                    logq = torch.log_softmax(ref_logits.float(), -1)
                    per_token = (logp.exp() * (logp - logq)).sum(-1)
                    kls.append(per_token.masked_fill(~mask, 0.0).sum(-1).cpu())
                    lengths.append(mask.sum(-1).cpu())
        finally:
            model.train(training)
        return torch.cat(kls), torch.cat(lengths)

    def measure(self) -> dict[str, float]:
        """``policy_kl`` (nats per sequence, the mean of ``k_i``), ``policy_kl_se`` (its standard error) and
        ``policy_kl_tokens`` (mean sampled completion length). Usable at any time, before training included."""
        kls, lengths = self.sequence_kls()
        return {
            "policy_kl": float(kls.mean()),
            "policy_kl_se": float(kls.std() / len(kls) ** 0.5) if len(kls) > 1 else float("nan"),
            "policy_kl_tokens": float(lengths.float().mean()),
        }


class PolicyKLCallback(TrainerCallback):
    """Measures :class:`PolicyKL` after optimizer step 1, every ``every``-th step and the last, and logs its values
    with the step through ``trainer.log_step_metrics`` (``log_history`` and every ``report_to`` tracker)."""

    def __init__(self, trainer: Any, measurer: PolicyKL, every: int = 5) -> None:
        self.trainer = trainer
        self.measurer = measurer
        self.every = every

    def is_measured_step(self, step: int, max_steps: int) -> bool:
        """Whether the policy KL is measured after optimizer step ``step`` (1-based) of ``max_steps``."""
        return step == 1 or step % self.every == 0 or step == max_steps

    def on_step_end(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.is_measured_step(state.global_step, state.max_steps):
            self.trainer.log_step_metrics(self.measurer.measure())
            control.should_log = True
