"""TRL >= 1.6's KTO loss step, restored with a loss hook: :func:`hooked_compute_loss`.

TRL 1.6 inlined the loss in ``KTOTrainer._compute_loss``; this module re-implements that method with the
loss replaced by ``trainer.kto_loss`` (:meth:`ktos.trainer.KTOSTrainer.kto_loss`), from the TRL helpers in
:mod:`ktos.compat`. It records TRL 1.16's metrics in TRL's per-step metric store (``trainer._metrics``),
so its logs carry the same keys as TRL's own trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from trl.models.utils import disable_gradient_checkpointing

from .compat import (
    Scores,
    fuses,
    labels,
    model_inputs,
    paired_scores,
    precomputed_reference,
    precomputes_reference,
    reference_model,
    sequence,
)


def hooked_compute_loss(trainer: Any, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """TRL >= 1.6's ``_compute_loss`` with its loss replaced by ``trainer.kto_loss`` (see the module docstring).

    Forward passes as TRL makes them (:func:`paired_scores`, with the collator's extra model inputs): the
    policy on the mismatched KL sequences (without gradients) and on the matched ones (with), the reference on
    both (or TRL's precomputed values); with ``fuse_forward_passes`` each pair of calls without gradients (the
    reference's, and the policy's in evaluation) is one. Metrics
    are recorded as TRL 1.16 records them (:func:`_record_token_metrics`, :func:`_record_batch_metrics`).
    Returns the mean of the per-example losses, as TRL does.
    """
    if trainer.aux_loss_enabled:
        raise RuntimeError("ktos does not add the MoE router auxiliary loss: set router_aux_loss_coef=0")
    mode = "train" if trainer.model.training else "eval"
    device = trainer.accelerator.device
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    is_chosen = labels(batch, device)
    chosen_idx, rejected_idx = torch.nonzero(is_chosen).view(-1), torch.nonzero(~is_chosen).view(-1)

    completion, kl_sequence = sequence(batch, "completion"), sequence(batch, "KL")
    extras = (model_inputs(batch, "completion"), model_inputs(batch, "KL"))
    policy, policy_KL_logps = paired_scores(
        model, completion, kl_sequence, extras, fuse=fuses(trainer) and not torch.is_grad_enabled(), stats=True
    )
    with torch.no_grad():
        stored = precomputed_reference(batch) if precomputes_reference(trainer) else None
        if stored is not None:
            reference_logps, reference_KL_logps = stored
        else:
            with disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
                with reference_model(trainer) as ref:
                    reference, reference_KL_logps = paired_scores(
                        ref, completion, kl_sequence, extras, fuse=fuses(trainer)
                    )
                    reference_logps = reference.logps

    chosen_logps = policy.logps.index_select(0, chosen_idx)
    rejected_logps = policy.logps.index_select(0, rejected_idx)
    losses, chosen_rewards, rejected_rewards, kl = trainer.kto_loss(
        chosen_logps,
        rejected_logps,
        policy_KL_logps,
        reference_logps.index_select(0, chosen_idx),
        reference_logps.index_select(0, rejected_idx),
        reference_KL_logps,
    )
    metrics = trainer._metrics[mode]
    metrics["kl"].append(kl.item())
    _record_token_metrics(trainer, mode, completion, policy, (chosen_idx, rejected_idx))
    _record_batch_metrics(trainer, mode, is_chosen, (chosen_rewards, rejected_rewards), (chosen_logps, rejected_logps))
    return losses.nanmean()


def _record_token_metrics(
    trainer: Any,
    mode: str,
    completion: Sequence[torch.Tensor],
    policy: Scores,
    indices: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """TRL 1.16's per-token metrics of the policy's completions, gathered across processes: ``entropy`` (mean
    over completion tokens, nats), ``num_tokens`` (attention-mask tokens trained on so far, counted in
    ``trainer.train_tokens``; tensor parallelism, where TRL divides by its size, is not supported) and
    ``logits/chosen``, ``logits/rejected`` (mean over each label's completion tokens of the mean logit)."""
    gather = trainer.accelerator.gather_for_metrics
    metrics = trainer._metrics[mode]
    attention, mask = completion[1], completion[2][:, 1:]
    if policy.entropy is not None:
        total = gather(mask.sum()).sum()
        entropy = gather((policy.entropy * mask).sum()).sum()
        metrics["entropy"].append((entropy / total).item() if total > 0 else 0.0)
    if mode == "train":
        trainer.train_tokens += gather(attention.sum()).sum().item()
    metrics["num_tokens"] = [trainer.train_tokens]
    if policy.mean_logits is None:
        return
    for name, idx in zip(("chosen", "rejected"), indices, strict=True):
        rows = mask.index_select(0, idx)
        logits_sum = gather(policy.mean_logits.index_select(0, idx)[rows.bool()].sum()).sum().item()
        tokens = gather(rows.sum()).sum().item()
        if tokens > 0:
            metrics[f"logits/{name}"].append(logits_sum / tokens)


def _record_batch_metrics(
    trainer: Any,
    mode: str,
    is_chosen: torch.Tensor,
    rewards: tuple[torch.Tensor, torch.Tensor],
    logps: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """TRL 1.7+'s per-example metrics, gathered across processes: ``rewards/chosen``, ``rewards/rejected``,
    ``logps/chosen``, ``logps/rejected`` (means over the examples of each label; rewards ``beta * (log pi -
    log pi_ref)``, log-probs in nats) and ``rewards/margins`` when the batch holds both labels."""
    gather = trainer.accelerator.gather_for_metrics
    metrics = trainer._metrics[mode]
    counts = {"chosen": gather(is_chosen.sum()).sum().item(), "rejected": gather((~is_chosen).sum()).sum().item()}
    for name, reward, logp in zip(("chosen", "rejected"), rewards, logps, strict=True):
        if counts[name] > 0:
            metrics[f"rewards/{name}"].append(gather(reward.nansum()).nansum().item() / counts[name])
            metrics[f"logps/{name}"].append(gather(logp.detach().nansum()).nansum().item() / counts[name])
    if counts["chosen"] > 0 and counts["rejected"] > 0:
        metrics["rewards/margins"].append(metrics["rewards/chosen"][-1] - metrics["rewards/rejected"][-1])
