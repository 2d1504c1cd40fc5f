r"""Every use of TRL internals, in one place, for TRL 1.5.1 to 1.16.0.

Read from the sources of TRL 1.5.1 (``trl/experimental/kto/kto_trainer.py``) and 1.16.0
(``trl/trainer/kto_trainer.py``), with the batch layouts of 1.6.0 and 1.8.0 checked against theirs.
Nothing else in ``ktos`` touches a private name of TRL; everything else uses TRL's public API
(``KTOConfig``, ``KTOTrainer``, ``TrlParser``).

Two loss paths:

* **TRL < 1.6** computes the loss in a method ``kto_loss(policy_chosen_logps, policy_rejected_logps,
  policy_KL_logps, reference_chosen_logps, reference_rejected_logps, reference_KL_logps)`` that a
  subclass may override (:data:`KTO_LOSS_HOOK` is True). TRL's own forward passes feed it.
* **TRL >= 1.6** inlines the loss in ``_compute_loss``: there is no hook. :func:`hooked_compute_loss`
  restores it: it computes the same six log-probability tensors (policy on the matched and the
  mismatched KL sequences, reference on both or TRL's precomputed reference log-probs), calls
  ``trainer.kto_loss`` with them, records TRL's metrics (``kl``, ``rewards/*``, ``logps/*``) in TRL's
  per-step metric store, and returns the mean of the per-example losses, as TRL does.

Batch layouts (what TRL's collator returns, per sequence kind: ids, attention mask, completion marker):

=========  ===========================================================  ==========================
TRL        completion (matched) / KL (mismatched) sequences               precomputed reference
=========  ===========================================================  ==========================
< 1.6      ``completion_input_ids`` ... ``completion_labels`` (-100 off)  ``reference_logps``
1.6, 1.7   ``completion_input_ids`` ... ``completion_mask`` (1 = scored)  ``ref_logps``
>= 1.8     ``input_ids``, ``attention_mask``, ``completion_mask``         ``ref_logps``
=========  ===========================================================  ==========================

(KL sequences: the same names with a ``KL_`` prefix.) Log-probabilities are summed over completion
tokens (sequence-level nats): through TRL's fused LM head where TRL >= 1.15 installed one, else from
the logits with TRL's ``selective_log_softmax``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import trl
from packaging.version import Version
from torch.utils.data import SequentialSampler
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import selective_log_softmax, use_adapter

log = logging.getLogger(__name__)

TRL_VERSION = Version(trl.__version__)
#: The TRL releases this module was read from and the suite runs against (pyproject caps trl here).
TESTED_TRL = (Version("1.5.1"), Version("1.16.0"))
#: TRL calls an overridable ``kto_loss`` with the six log-prob tensors (removed in 1.6).
KTO_LOSS_HOOK = TRL_VERSION < Version("1.6")
#: ``KTOTrainer`` is in TRL's stable API (``trl.KTOTrainer``) from 1.8; before, ``trl.experimental.kto``.
STABLE_KTO = TRL_VERSION >= Version("1.8")
#: TRL installs a fused LM head on the models it trains (``model(..., fused_lm_head=True).log_probs``).
FUSED_LM_HEAD = TRL_VERSION >= Version("1.15")

if STABLE_KTO:
    from trl import KTOConfig, KTOTrainer
else:  # the only import path there; TRL warns that experimental APIs may change, which the pin accounts for
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental.*", category=UserWarning)
        from trl.experimental.kto import KTOConfig, KTOTrainer

if not TESTED_TRL[0] <= TRL_VERSION <= TESTED_TRL[1]:
    log.warning(
        "TRL %s is outside the range ktos was tested with (%s to %s): KTO-S may not reach TRL's loss",
        TRL_VERSION, *TESTED_TRL,
    )

__all__ = [
    "KTOConfig",
    "KTOTrainer",
    "KTO_LOSS_HOOK",
    "TRL_VERSION",
    "hooked_compute_loss",
    "labels",
    "prepare_dataset",
    "reference_model",
    "sequence",
    "sequence_logps",
    "trust_remote_code",
]

_LAYOUT = "1.5" if KTO_LOSS_HOOK else ("1.6" if not STABLE_KTO else "1.8")
_SEQUENCE_KEYS: dict[str, dict[str, tuple[str, str, str]]] = {
    "1.5": {
        "completion": ("completion_input_ids", "completion_attention_mask", "completion_labels"),
        "KL": ("KL_completion_input_ids", "KL_completion_attention_mask", "KL_completion_labels"),
    },
    "1.6": {
        "completion": ("completion_input_ids", "completion_attention_mask", "completion_mask"),
        "KL": ("KL_completion_input_ids", "KL_completion_attention_mask", "KL_completion_mask"),
    },
    "1.8": {
        "completion": ("input_ids", "attention_mask", "completion_mask"),
        "KL": ("KL_input_ids", "KL_attention_mask", "KL_completion_mask"),
    },
}
_REFERENCE_KEYS = ("reference_logps", "reference_KL_logps") if KTO_LOSS_HOOK else ("ref_logps", "ref_KL_logps")


def sequence(batch: dict[str, Any], kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, completion_mask)`` of a collated batch's ``kind`` sequences.

    ``kind`` is ``"completion"`` (each prompt with its own completion) or ``"KL"`` (each prompt with a
    mismatched completion). ``completion_mask`` is 1 on the completion tokens, aligned with ``input_ids``.
    """
    ids_key, attention_key, marker_key = _SEQUENCE_KEYS[_LAYOUT][kind]
    marker = batch[marker_key]
    mask = (marker != -100).long() if _LAYOUT == "1.5" else marker
    return batch[ids_key], batch[attention_key], mask


def labels(batch: dict[str, Any], device: torch.device | None = None) -> torch.Tensor:
    """The batch's labels as a bool tensor (TRL < 1.8 collates them as a list)."""
    return torch.as_tensor(batch["label"], dtype=torch.bool, device=device)


def precomputed_reference(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """TRL's precomputed reference log-probs of the batch's completion and KL sequences, if present."""
    completion_key, kl_key = _REFERENCE_KEYS
    if completion_key not in batch:
        return None
    return batch[completion_key], batch[kl_key]


def sequence_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """``sum_t log p(token_t | tokens_<t)`` over the completion tokens of each row (sequence-level nats).

    Gradients flow when called with gradients enabled. On TRL >= 1.15 the model's fused LM head scores
    only the completion positions without materialising the logits, as TRL's own loss does.
    """
    if _has_fused_head(model):
        target = input_ids.masked_fill(completion_mask == 0, -100)
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=target, fused_lm_head=True)
        return out.log_probs[:, -(input_ids.size(1) - 1) :].sum(-1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    per_token = selective_log_softmax(logits, input_ids[:, 1:])
    return (per_token * completion_mask[:, 1:]).sum(-1)


def _has_fused_head(model: torch.nn.Module) -> bool:
    """Whether TRL (>= 1.15) installed its fused LM head under ``model`` (behind DDP and PEFT wrappers)."""
    if not FUSED_LM_HEAD:
        return False
    inner = getattr(model, "module", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    code = getattr(inner.forward, "__code__", None)
    return code is not None and "fused_lm_head" in code.co_varnames


def _is_peft_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


@contextlib.contextmanager
def reference_model(trainer: Any) -> Iterator[torch.nn.Module]:
    """The frozen reference model: the trainer's ``ref_model``, or (PEFT) the policy with its adapter off, or,
    before the first optimizer step, the policy itself.

    TRL keeps no reference copy when the policy is a PEFT model (the base weights are the reference,
    reached by disabling the adapter or switching to an adapter named ``"ref"``) nor, with
    ``precompute_ref_log_probs``, once it has precomputed the reference log-probs; then only the policy
    before training stands for the reference.
    """
    if trainer.ref_model is not None:
        yield trainer.ref_model
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not _is_peft_model(model):
        if trainer.state.global_step == 0:
            yield trainer.model
            return
        raise RuntimeError("no reference model after training started: measure reference log-probs before training")
    with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
        yield trainer.model


def prepare_dataset(trainer: Any, dataset: Any, name: str) -> Any:
    """Tokenise ``dataset`` exactly as the trainer tokenises its training set (with KL pairs)."""
    return trainer._prepare_dataset(dataset, trainer.processing_class, trainer.args, name)


#: TRL's prepared (tokenised, KL-paired) datasets of this process, by what determines them.
_PREPARED: dict[tuple, Any] = {}


def cached_prepare(prepare: Any, dataset: Any, processing_class: Any, args: Any, name: str) -> Any:
    """``prepare(dataset, processing_class, args, name)`` (TRL's ``_prepare_dataset``), once per process for
    the same data (its content fingerprint), tokenizer and the settings that shape the result; a training
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
    )
    if key not in _PREPARED:
        _PREPARED[key] = prepare(dataset, processing_class, args, name)
    return _PREPARED[key]


def trust_remote_code(model_config: Any, args: Any) -> bool:
    """``trust_remote_code`` from TRL's ``ModelConfig`` (TRL < 1.16) or its ``KTOConfig`` (1.16, where it moved)."""
    if "trust_remote_code" in KTOConfig.__dataclass_fields__:
        return bool(args.trust_remote_code)
    return bool(model_config.trust_remote_code)


def precomputes_reference(trainer: Any) -> bool:
    """Whether the trainer reads the reference log-probs from the batch (``precompute_ref_log_probs``)."""
    return bool(getattr(trainer, "precompute_ref_log_probs" if KTO_LOSS_HOOK else "precompute_ref_logps"))


def train_sampler(dataset: Any) -> SequentialSampler:
    """The training set in file order: the balance stage writes the batch order, and TRL builds each
    example's mismatched KL completion from its neighbours in that order."""
    return SequentialSampler(dataset)


def hooked_compute_loss(trainer: Any, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    """TRL >= 1.6's ``_compute_loss`` with its loss replaced by ``trainer.kto_loss`` (see the module docstring).

    Forward passes as TRL makes them: the policy on the matched sequences (with gradients) and on the
    mismatched KL sequences (without), the reference on both (or TRL's precomputed values). Metrics
    are recorded as TRL 1.7+ records them, gathered across processes: ``kl``, ``rewards/chosen``,
    ``rewards/rejected``, ``logps/chosen``, ``logps/rejected`` (batch means over the examples of each
    label) and ``rewards/margins`` when the batch holds both labels.
    """
    if trainer.aux_loss_enabled:
        raise RuntimeError("ktos does not add the MoE router auxiliary loss: set router_aux_loss_coef=0")
    mode = "train" if trainer.model.training else "eval"
    accelerator = trainer.accelerator
    device = accelerator.device
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    is_chosen = labels(batch, device)
    chosen_idx = torch.nonzero(is_chosen).view(-1)
    rejected_idx = torch.nonzero(~is_chosen).view(-1)

    completion, kl_sequence = sequence(batch, "completion"), sequence(batch, "KL")
    policy_logps = sequence_logps(model, *completion)
    with torch.no_grad():
        policy_KL_logps = sequence_logps(model, *kl_sequence)
        stored = precomputed_reference(batch) if precomputes_reference(trainer) else None
        if stored is not None:
            reference_logps, reference_KL_logps = stored
        else:
            with disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
                with reference_model(trainer) as ref:
                    reference_logps = sequence_logps(ref, *completion)
                    reference_KL_logps = sequence_logps(ref, *kl_sequence)

    chosen_logps, rejected_logps = policy_logps.index_select(0, chosen_idx), policy_logps.index_select(0, rejected_idx)
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
    gather = accelerator.gather_for_metrics
    counts = {"chosen": gather(is_chosen.sum()).sum().item(), "rejected": gather((~is_chosen).sum()).sum().item()}
    for name, rewards, logps in (
        ("chosen", chosen_rewards, chosen_logps),
        ("rejected", rejected_rewards, rejected_logps),
    ):
        if counts[name] > 0:
            metrics[f"rewards/{name}"].append(gather(rewards.nansum()).nansum().item() / counts[name])
            metrics[f"logps/{name}"].append(gather(logps.detach().nansum()).nansum().item() / counts[name])
    if counts["chosen"] > 0 and counts["rejected"] > 0:
        metrics["rewards/margins"].append(metrics["rewards/chosen"][-1] - metrics["rewards/rejected"][-1])
    return losses.nanmean()
