r"""Every use of TRL internals, in one place, for TRL 1.5.1 to 1.16.0.

Read from the sources of TRL 1.5.1 (``trl/experimental/kto/kto_trainer.py``) and 1.16.0
(``trl/trainer/kto_trainer.py``), with the batch layouts of 1.6.0 and 1.8.0 checked against theirs.
:data:`TRL_PRIVATE_NAMES` lists every private name of TRL's trainer that ktos touches, per TRL era (a test
checks the list against ktos's sources and the installed TRL): one loss override point per era (``kto_loss``
before 1.6; ``compute_loss`` and TRL's metric store ``_metrics`` from 1.6, in :mod:`ktos.hooked_loss`), TRL's
tokenisation ``_prepare_dataset`` (cached by :class:`ktos.trainer.KTOSTrainer`, reused by the KL probe) and the
model card's ``_name`` and ``_paper``. Everything else uses TRL's public API (``KTOConfig``, ``KTOTrainer``,
``TrlParser``, ``train_sampling_strategy``) and the helpers here.

Two loss paths:

* **TRL < 1.6** computes the loss in a method ``kto_loss(policy_chosen_logps, policy_rejected_logps,
  policy_KL_logps, reference_chosen_logps, reference_rejected_logps, reference_KL_logps)`` that a
  subclass may override (:data:`KTO_LOSS_HOOK` is True). TRL's own forward passes feed it.
* **TRL >= 1.6** inlines the loss in ``_compute_loss``: there is no hook. :func:`ktos.hooked_loss.hooked_compute_loss`
  restores it: it computes the same six log-probability tensors (policy on the matched and the
  mismatched KL sequences, reference on both or TRL's precomputed reference log-probs) with the same
  model inputs (the collator's extras, such as ``token_type_ids``), calls ``trainer.kto_loss`` with them,
  records TRL 1.16's metrics (``kl``, ``entropy``, ``num_tokens``, ``logits/*``, ``rewards/*``, ``logps/*``)
  in TRL's per-step metric store, and returns the mean of the per-example losses, as TRL does.

Fused forward passes (``KTOSConfig.fuse_forward_passes``): where TRL calls a model twice without gradients
(the reference on the completions and on the KL pairs, and in evaluation the policy too), one call scores
both row sets stacked (:func:`stack_rows`): :func:`fused_forward` replaces TRL < 1.6's ``forward`` there,
:func:`paired_scores` makes the calls of the hooked path.

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
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import trl
from packaging.version import Version
from trl.trainer.utils import entropy_from_logits, selective_log_softmax, use_adapter

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

#: Every private (underscore) attribute or method of TRL's ``KTOTrainer`` that ktos reads, writes or overrides,
#: by TRL era; ktos 0.1.0 touched 7 on TRL >= 1.6 (also ``_get_train_sampler``, ``_total_train_tokens``,
#: ``_tp_size``), 4 before.
TRL_PRIVATE_NAMES: dict[str, frozenset[str]] = {
    "< 1.6": frozenset({"_prepare_dataset", "_name", "_paper"}),
    ">= 1.6": frozenset({"_prepare_dataset", "_name", "_paper", "_metrics"}),
}
#: The installed TRL's era's private names.
PRIVATE_NAMES = TRL_PRIVATE_NAMES["< 1.6" if KTO_LOSS_HOOK else ">= 1.6"]

if STABLE_KTO:
    from trl import KTOConfig, KTOTrainer
else:  # the only import path there; TRL warns that experimental APIs may change, which the pin accounts for
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental.*", category=UserWarning)
        from trl.experimental.kto import KTOConfig, KTOTrainer  # type: ignore[assignment, unused-ignore]

if not TESTED_TRL[0] <= TRL_VERSION <= TESTED_TRL[1]:
    log.warning(
        "TRL %s is outside the range ktos was tested with (%s to %s): KTO-S may not reach TRL's loss",
        TRL_VERSION,
        *TESTED_TRL,
    )

__all__ = [
    "KTOConfig",
    "KTOTrainer",
    "KTO_LOSS_HOOK",
    "TRL_VERSION",
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


class Scores(NamedTuple):
    """One model call's scores of a batch of sequences.

    ``logps``: ``sum_t log p(token_t | tokens_<t)`` over each row's completion tokens, shape ``(rows,)``, in nats.
    ``entropy`` and ``mean_logits`` (only when asked for): per next-token position, shape ``(rows, T - 1)``, without
    gradient: the entropy ``-sum_v p_v log p_v`` (nats) and the mean over the vocabulary of the logits.
    """

    logps: torch.Tensor
    entropy: torch.Tensor | None = None
    mean_logits: torch.Tensor | None = None


def score(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    extras: dict[str, Any] | None = None,
    *,
    stats: bool = False,
) -> Scores:
    """:class:`Scores` of the rows under ``model``; ``extras`` are further model inputs (``token_type_ids``, ...).

    Gradients flow when called with gradients enabled. On TRL >= 1.15 the model's fused LM head scores
    only the completion positions without materialising the logits, as TRL's own loss does (its
    ``entropy`` and ``mean_logits`` are those TRL installed the head to compute on the policy).
    """
    extras = extras or {}
    width = input_ids.size(1) - 1
    if _has_fused_head(model):
        target = input_ids.masked_fill(completion_mask == 0, -100)
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=target, fused_lm_head=True,
                    use_cache=False, **extras)  # fmt: skip
        logps = out.log_probs[:, -width:].sum(-1)
        if not stats:
            return Scores(logps)
        return Scores(logps, *(None if t is None else t[:, -width:].detach() for t in (out.entropy, out.mean_logits)))
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extras).logits[:, :-1]
    logps = (selective_log_softmax(logits, input_ids[:, 1:]) * completion_mask[:, 1:]).sum(-1)
    if not stats:
        return Scores(logps)
    with torch.no_grad():
        return Scores(logps, entropy_from_logits(logits.detach()), logits.detach().mean(-1))


def sequence_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> torch.Tensor:
    """``sum_t log p(token_t | tokens_<t)`` over the completion tokens of each row (sequence-level nats);
    :func:`score`'s ``logps``."""
    return score(model, input_ids, attention_mask, completion_mask).logps


def stack_rows(
    first: Sequence[torch.Tensor], second: Sequence[torch.Tensor], pads: Sequence[int]
) -> list[torch.Tensor]:
    """``first[i]``'s rows, then ``second[i]``'s, as one tensor, each right-padded along dim 1 with ``pads[i]`` to the
    longer of the two widths.

    For the sequences of a causal model (ids padded with any id, attention mask and completion marker with 0), the
    extra positions on the right are masked keys that no earlier position attends to and carry no completion
    token: a row's scores at its own positions are those it has alone (up to the floating-point order of a
    batch of another shape).
    """
    width = max(first[0].size(1), second[0].size(1))
    return [
        torch.cat([F.pad(a, (0, width - a.size(1)), value=pad), F.pad(b, (0, width - b.size(1)), value=pad)])
        for a, b, pad in zip(first, second, pads, strict=True)
    ]


#: Extra model inputs that are per-token like the ids, so rows of two batches can be stacked (padded with 0).
_STACKABLE_INPUTS = frozenset({"token_type_ids", "mm_token_type_ids"})


def _stackable(extras: tuple[dict[str, Any], dict[str, Any]]) -> bool:
    """Whether the two calls' extra inputs can be stacked row-wise (none, or the same per-token ones)."""
    return extras[0].keys() == extras[1].keys() and extras[0].keys() <= _STACKABLE_INPUTS


def paired_scores(
    model: torch.nn.Module,
    completion: Sequence[torch.Tensor],
    kl_sequence: Sequence[torch.Tensor],
    extras: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
    *,
    fuse: bool = False,
    stats: bool = False,
) -> tuple[Scores, torch.Tensor]:
    """The completion rows' :class:`Scores` and the KL rows' ``logps`` (detached) under ``model``.

    Unfused: TRL's two calls, the KL rows without gradients first, then the completions. Fused (``fuse``, and
    extra inputs that stack): one call on both row sets stacked by :func:`stack_rows`, so 2B rows instead
    of B + B; with gradients enabled its backward also runs over the KL rows (whose gradient is zero).
    """
    n, width = completion[0].shape
    if fuse and _stackable(extras):
        stacked_extras = {key: stack_rows([extras[0][key]], [extras[1][key]], [0])[0] for key in extras[0]}
        ids, attention, mask = stack_rows(completion, kl_sequence, (0, 0, 0))
        both = score(model, ids, attention, mask, stacked_extras, stats=stats)
        per_token = (None if t is None else t[:n, : width - 1] for t in (both.entropy, both.mean_logits))
        return Scores(both.logps[:n], *per_token), both.logps[n:].detach()
    with torch.no_grad():
        kl_logps = score(model, kl_sequence[0], kl_sequence[1], kl_sequence[2], extras[1]).logps
    return score(model, completion[0], completion[1], completion[2], extras[0], stats=stats), kl_logps


def _has_fused_head(model: torch.nn.Module) -> bool:
    """Whether TRL (>= 1.15) installed its fused LM head under ``model`` (behind DDP and PEFT wrappers)."""
    if not FUSED_LM_HEAD:
        return False
    inner: Any = getattr(model, "module", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    code = getattr(getattr(inner, "forward", None), "__code__", None)
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


def trust_remote_code(model_config: Any, args: Any) -> bool:
    """``trust_remote_code`` from TRL's ``ModelConfig`` (TRL < 1.16) or its ``KTOConfig`` (1.16, where it moved)."""
    if "trust_remote_code" in KTOConfig.__dataclass_fields__:
        return bool(args.trust_remote_code)
    return bool(model_config.trust_remote_code)


def precomputes_reference(trainer: Any) -> bool:
    """Whether the trainer reads the reference log-probs from the batch (``precompute_ref_log_probs``)."""
    return bool(getattr(trainer, "precompute_ref_log_probs" if KTO_LOSS_HOOK else "precompute_ref_logps"))


def fuses(trainer: Any) -> bool:
    """Whether the trainer's config asks for fused forward passes (``KTOSConfig.fuse_forward_passes``)."""
    return bool(getattr(trainer.args, "fuse_forward_passes", False))


def fuses_call(trainer: Any, batch: dict[str, Any]) -> bool:
    """Whether TRL < 1.6's ``forward`` call on ``batch`` runs fused (:func:`fused_forward`): asked for, without
    gradients (the reference model's call, and every call in evaluation), with KL rows, and no MoE router loss."""
    return (
        fuses(trainer)
        and not torch.is_grad_enabled()
        and not trainer.aux_loss_enabled
        and "KL_completion_input_ids" in batch
    )


def fused_forward(trainer: Any, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """TRL < 1.6's ``KTOTrainer.forward(model, batch)`` in one model call instead of two.

    Returns TRL's ``(chosen_logps, rejected_logps, chosen_logits, rejected_logits, KL_logps)``: the completion
    and the KL rows stacked by :func:`stack_rows` (labels padded with -100), scored by TRL's own
    ``get_batch_logps`` (summed log-probs, nats), then split; the logits are cut back to the completions' width.
    """
    keys = _SEQUENCE_KEYS["1.5"]
    n, width = batch[keys["completion"][0]].shape
    ids, attention, target = stack_rows(
        [batch[k] for k in keys["completion"]], [batch[k] for k in keys["KL"]], (0, 0, -100)
    )
    logits = model(ids, attention_mask=attention, use_cache=False).logits
    logps = trainer.get_batch_logps(logits, target, average_log_prob=False)
    is_chosen = labels(batch, logits.device)
    chosen_idx, rejected_idx = torch.nonzero(is_chosen).view(-1), torch.nonzero(~is_chosen).view(-1)
    completion_logps, completion_logits = logps[:n], logits[:n, :width]
    return (
        completion_logps.index_select(0, chosen_idx),
        completion_logps.index_select(0, rejected_idx),
        completion_logits.index_select(0, chosen_idx),
        completion_logits.index_select(0, rejected_idx),
        logps[n:].detach(),
    )


#: Collated keys that are not model inputs: the sequences' own, the labels and the precomputed reference.
_NOT_MODEL_INPUTS = frozenset(
    {"label", *_REFERENCE_KEYS, *(k for keys in _SEQUENCE_KEYS[_LAYOUT].values() for k in keys)}
)


def model_inputs(batch: dict[str, Any], kind: str) -> dict[str, Any]:
    """The model inputs of the batch's ``kind`` sequences besides their ids and attention mask, as TRL >= 1.8
    passes them: every other collated key (``token_type_ids``, ``pixel_values``, ...); the KL call takes
    ``KL_token_type_ids`` and ``KL_mm_token_type_ids`` in place of the completions' where the collator built them."""
    extras = {k: v for k, v in batch.items() if k not in _NOT_MODEL_INPUTS and not k.startswith("KL_")}
    if kind == "KL":
        extras.update({key: batch[f"KL_{key}"] for key in _STACKABLE_INPUTS if f"KL_{key}" in batch})
    return extras
