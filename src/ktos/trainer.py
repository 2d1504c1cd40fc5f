"""KTO-S on TRL: ``KTOSTrainer``, configured by :class:`ktos.config.KTOSConfig`.

``KTOSTrainer`` is TRL's ``KTOTrainer`` (TRL 1.5.1 to 1.16.0) whose loss is :func:`ktos.losses.kto_loss`:
KTO-S with KTO-S's ``loss_type`` (:data:`ktos.loss_types.KTO_S`), exactly TRL's KTO loss with ``"kto"``;
``"apo_zero_unpaired"`` (KTO-zero) is TRL's own code. On TRL < 1.6 TRL's own forward passes call the overridden
``kto_loss``; from 1.6 on, where TRL inlines its loss, :mod:`ktos.hooked_loss` computes the same
log-probabilities and calls it. Configurations whose training loss would not go through ``kto_loss`` are refused
at construction, and the first training step checks that it did. With ``kl_probe_size > 0`` the trainer builds the
KL probe (:mod:`ktos.probe`) itself, and it logs the update norm (:mod:`ktos.update_norm`) unless
``log_update_norm=False``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import torch
from datasets import Dataset

from . import compat, losses
from .balance import warn_if_sorted_by_label
from .config import KTOSConfig
from .hooked_loss import hooked_compute_loss
from .loss_types import KTO, KTO_S, LOSS_TYPE_NAMES, REFERENCE_POINTS, TRL_COMPUTED, announcement
from .policy_kl import PolicyKL, PolicyKLCallback, heldout_prompts
from .preparation import cached_prepare
from .probe import KLProbe, ProbeCallback, heldout_dataset, probe_dataset
from .update_norm import UpdateNormCallback
from .validation import check_feedback

log = logging.getLogger(__name__)


#: One paragraph per loss type for its model card (``r``: the policy's log-ratio to the reference on a
#: completion, ``z0``: the batch estimate of the KL to the reference that KTO uses as its reference point).
METHOD_DESCRIPTIONS = {
    KTO_S: (
        "KTO-S is KTO with a sign-corrected reference point: each example's reward `r = log pi(y|x) - log pi_ref(y|x)` "
        "is compared with `-sign(r) * z0` instead of KTO's `z0` (the batch estimate of the KL to the reference model), "
        "so the loss is `w * (1 - sigmoid(beta * s * (r + sign(r) * z0)))` with `s = +1` for desirable and `-1` for "
        "undesirable examples. Its gradient weight shrinks as `z0` grows: a brake on the KL that tightens with it."
    ),
    "apo_zero_unpaired": (
        "KTO-zero is KTO with the reference point 0 instead of `z0` (the batch estimate of the KL to the reference "
        "model): the loss is `w * (1 - sigmoid(beta * s * r))` with `r = log pi(y|x) - log pi_ref(y|x)` and `s = +1` "
        "for desirable and `-1` for undesirable examples (HALOs' `kto-zero`; TRL's `loss_type=\"apo_zero_unpaired\"`, "
        "which computed it)."
    ),
    KTO: (
        "KTO as TRL computes it (reference point `z0`, the batch estimate of the KL to the reference model), trained "
        'through ktos\' `KTOSTrainer` with `loss_type="kto"`.'
    ),
}


def with_method_section(card: str, loss_type: str) -> str:
    """``card`` (TRL's model card text) with a "Method" section for ``loss_type`` before its "Citations" section
    (at the end if it has none): what the method is, that ktos trained it, and KTO's citation."""
    kto = compat.KTOTrainer._paper
    section = (
        f"## Method: {LOSS_TYPE_NAMES[loss_type]}\n\n{METHOD_DESCRIPTIONS[loss_type]}\n\n"
        f"`loss_type={loss_type!r}`: {REFERENCE_POINTS[loss_type]}.\n\n"
        "Trained with ktos (`ktos.KTOSTrainer`, TRL's `KTOTrainer` with its loss replaced). "
        f"KTO was introduced in [{kto['title']}](https://huggingface.co/papers/{kto['id']})"
    )
    section += ".\n\n" if loss_type == KTO else f"; cite it as:\n\n```bibtex\n{kto['citation']}\n```\n\n"
    head, marker, tail = card.partition("## Citations")
    return head + section + marker + tail if marker else card.rstrip("\n") + "\n\n" + section


def bypasses(args: KTOSConfig, kwargs: dict[str, Any]) -> list[str]:
    """Why a trainer built from ``args`` and ``kwargs`` would not train through ``ktos.losses`` (empty if it would).

    TRL's Liger path computes a fused KTO loss of its own; ``compute_loss_func`` replaces the loss;
    ``sync_ref_model`` moves the reference model that KL is measured against; a sampler other than sequential
    breaks the batch order the balance stage wrote and TRL's mismatched KL pairs.
    """
    reasons = []
    if args.use_liger_kernel:
        reasons.append("use_liger_kernel=True: TRL's Liger path computes its own fused KTO loss")
    if getattr(args, "sync_ref_model", False):
        reasons.append("sync_ref_model=True: the reference model, and so the KL, would move during training")
    strategy = getattr(args, "train_sampling_strategy", "sequential")
    if strategy != "sequential":
        reasons.append(
            f"train_sampling_strategy={strategy!r}: ktos reads the training set in its order, because TRL builds each "
            "example's mismatched KL pair from its neighbours in that order and `ktos balance` writes the batch "
            "order; shuffle the dataset once instead (`train_dataset.shuffle(seed=...)`) and keep 'sequential'"
        )
    if kwargs.get("compute_loss_func") is not None:
        reasons.append("compute_loss_func replaces the loss")
    return reasons


def warn_if_truncated(dataset: Any, max_length: int | None, given: int, name: str = "training") -> int:
    """Count the examples of TRL's prepared ``dataset`` (``prompt_ids``, ``completion_ids``; prepared from ``given``
    rows) whose prompt and completion together exceed ``max_length`` tokens, which TRL's collator cuts to
    ``max_length``, plus those TRL dropped in preparing it (TRL 1.16 drops a prompt longer than ``max_length``);
    one WARNING when any are. Returns the count."""
    if max_length is None or not isinstance(dataset, Dataset):
        return 0
    if not {"prompt_ids", "completion_ids"} <= set(dataset.column_names):
        return 0
    table = dataset.select_columns(["prompt_ids", "completion_ids"]).with_format("arrow")[:]
    lengths = pc.add(pc.list_value_length(table["prompt_ids"]), pc.list_value_length(table["completion_ids"]))
    dropped = max(given - len(dataset), 0)
    cut = int(pc.sum(pc.greater(lengths, max_length)).as_py() or 0) + dropped
    if cut:
        log.warning(
            "%d of %d %s examples were truncated to max_length=%d tokens (prompt + completion%s): raise max_length "
            "to keep them whole",
            cut,
            given,
            name,
            max_length,
            f"; {dropped} of them dropped by TRL, their prompt alone too long" if dropped else "",
        )
    return cut


class KTOSTrainer(compat.KTOTrainer):
    """TRL's ``KTOTrainer`` whose loss is KTO-S (``args.loss_type`` :data:`~ktos.loss_types.KTO_S`), plain KTO or
    KTO-zero.

    Before TRL sees the data it is checked as ``ktos train`` checks it (:func:`ktos.validation.check_feedback`: columns,
    texts, labels; train set: both labels required), and a train set whose order puts many one-label batches
    together draws a warning (:func:`ktos.balance.warn_if_sorted_by_label`). Configurations listed by
    :func:`bypasses` raise ``ValueError``. The training set is read in file order. With ``kl_probe_size > 0``
    and held-out data (``kl_probe_dataset`` or ``eval_dataset``) the KL probe is measured every
    ``kl_probe_steps`` steps and logged; with ``policy_kl_size > 0`` the policy KL (:mod:`ktos.policy_kl`) is
    measured every ``policy_kl_steps`` steps on that held-out data's prompts (``ValueError`` without any). The
    first training step raises ``RuntimeError`` if its loss did not come from :meth:`kto_loss` (or, for a loss TRL
    computes, TRL's code).
    """

    args: KTOSConfig

    def __init__(
        self,
        model: Any,
        ref_model: Any = None,
        args: KTOSConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None or not isinstance(args, KTOSConfig):
            raise TypeError("KTOSTrainer needs a KTOSConfig as `args`")
        reasons = bypasses(args, kwargs)
        if reasons:
            raise ValueError("KTOSTrainer cannot train through the ktos loss with " + "; ".join(reasons))
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        train_dataset = check_feedback(train_dataset, name="train")
        if isinstance(train_dataset, Dataset) and "label" in train_dataset.column_names:
            warn_if_sorted_by_label(train_dataset["label"], args.per_device_train_batch_size)
        if isinstance(eval_dataset, dict):
            eval_dataset = {
                k: check_feedback(d, name=f"eval {k!r}", require_both_labels=False) for k, d in eval_dataset.items()
            }
        elif eval_dataset is not None:
            eval_dataset = check_feedback(eval_dataset, name="eval", require_both_labels=False)
        self.loss_calls = 0
        self.train_tokens = 0  # attention-mask tokens trained on (the hooked path's num_tokens)
        self._loss_checked = False
        self._step_metrics: dict[str, float] = {}
        log.warning("%s", announcement(str(args.loss_type)))
        log.info(
            "%s (TRL %s): training %s (loss_type=%r) with beta=%g (desirable_weight=%g, undesirable_weight=%g)",
            type(self).__name__,
            compat.TRL_VERSION,
            LOSS_TYPE_NAMES[str(args.loss_type)],
            args.loss_type,
            args.beta,
            args.desirable_weight,
            args.undesirable_weight,
        )
        given = len(train_dataset) if isinstance(train_dataset, Dataset) else 0
        held_out = probe_dataset(args, eval_dataset)
        policy_kl_data = heldout_dataset(args, eval_dataset) if args.policy_kl_size > 0 else None
        if args.policy_kl_size > 0 and policy_kl_data is None:
            raise ValueError(
                f"policy_kl_size={args.policy_kl_size} needs held-out prompts: give kl_probe_dataset or eval_dataset "
                "(or set policy_kl_size=0)"
            )
        super().__init__(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            **kwargs,
        )
        self.truncated = warn_if_truncated(self.train_dataset, args.max_length, given)
        if args.log_update_norm:
            self.add_callback(UpdateNormCallback(self))
        self.probe = None if held_out is None else KLProbe(self, held_out, args.kl_probe_size)
        if self.probe is not None:
            self.add_callback(ProbeCallback(self, self.probe, every=args.kl_probe_steps))
        self.policy_kl = None
        if policy_kl_data is not None:
            prompts = heldout_prompts(policy_kl_data, args.policy_kl_size)
            self.policy_kl = PolicyKL(self, prompts, args.policy_kl_max_new_tokens, seed=args.policy_kl_seed)
            self.add_callback(PolicyKLCallback(self, self.policy_kl, every=args.policy_kl_steps))

    @property
    def _name(self) -> str:  # type: ignore[override]
        """The method's name in TRL's model card and logs: ``"KTO-S"``, ``"KTO"`` or ``"KTO-zero"``."""
        return LOSS_TYPE_NAMES[str(self.args.loss_type)]

    @property
    def _paper(self) -> dict[str, str]:  # type: ignore[override]
        """TRL's KTO paper for plain KTO; none for KTO-S and KTO-zero, which have none of their own (their card
        cites KTO, on which they build)."""
        return compat.KTOTrainer._paper if self.args.loss_type == KTO else {}

    def create_model_card(  # type: ignore[override]  # TRL's own override narrows transformers' signature
        self, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None
    ) -> None:
        """TRL's model card in ``output_dir/README.md``, naming the method (``_name``) and tagged ``ktos`` and the
        ``loss_type``, with a section describing the method and citing KTO."""
        loss_type = str(self.args.loss_type)
        extra = [tags] if isinstance(tags, str) else list(tags or [])
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=[*extra, "ktos", loss_type])
        path = Path(self.args.output_dir or ".") / "README.md"
        if self.is_world_process_zero() and path.is_file():
            path.write_text(with_method_section(path.read_text(), loss_type))

    def log_step_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log ``metrics`` with the next training log: the current step's when called before it is logged
        (in a callback's ``on_step_end``), so they reach ``log_history`` and every tracker at that step."""
        self._step_metrics.update(metrics)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's ``log``; a training log (one with ``loss``) also carries the :meth:`log_step_metrics` values."""
        if "loss" in logs and self._step_metrics:
            logs.update(self._step_metrics)
            self._step_metrics = {}
        super().log(logs, start_time)

    def kto_loss(  # type: ignore[override, unused-ignore]  # TRL annotates torch.FloatTensor, an alias of these float tensors
        self,
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        policy_KL_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor,
        reference_rejected_logps: torch.Tensor,
        reference_KL_logps: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's per-example losses via :func:`ktos.losses.kto_loss` (TRL's ``kto_loss`` signature).

        ``z0`` is gathered across processes as TRL does (mean of the per-process means, clamped at 0). A loss type
        TRL computes (:data:`ktos.loss_types.TRL_COMPUTED`; TRL < 1.6 calls this) is TRL's own ``kto_loss``.
        Every call is counted in ``loss_calls``.
        """
        self.loss_calls += 1
        logps = (
            policy_chosen_logps,
            policy_rejected_logps,
            policy_KL_logps,
            reference_chosen_logps,
            reference_rejected_logps,
            reference_KL_logps,
        )
        if self.args.loss_type in TRL_COMPUTED:
            trl_loss: Any = super().kto_loss  # type: ignore[misc, unused-ignore]  # TRL < 1.6 only
            return trl_loss(*logps)
        z0 = (policy_KL_logps - reference_KL_logps).mean().detach()
        z0 = self.accelerator.gather_for_metrics(z0).mean().clamp(min=0)
        return losses.kto_loss(
            *logps,
            beta=self.beta,
            desirable_weight=self.desirable_weight,
            undesirable_weight=self.undesirable_weight,
            sign_correction=self.args.loss_type == KTO_S,
            kl=z0,
        )

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """TRL's loss path where it calls :meth:`kto_loss` (TRL < 1.6) or computes the loss itself (a loss type in
        :data:`ktos.loss_types.TRL_COMPUTED`, counted in ``loss_calls``), else
        :func:`ktos.hooked_loss.hooked_compute_loss`."""
        if not compat.KTO_LOSS_HOOK and self.args.loss_type in TRL_COMPUTED:
            self.loss_calls += 1
        if compat.KTO_LOSS_HOOK or self.args.loss_type in TRL_COMPUTED:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if return_outputs:
            raise NotImplementedError(
                "KTOSTrainer returns the loss only (no logits): evaluate with prediction_loss_only"
            )
        return hooked_compute_loss(self, model, inputs)

    def forward(self, model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:  # type: ignore[override, unused-ignore]
        """TRL < 1.6's forward passes of ``model`` on a batch; one call instead of two where
        :func:`ktos.compat.fuses_call` says so (:func:`ktos.compat.fused_forward`)."""
        if compat.fuses_call(self, batch):
            return compat.fused_forward(self, model, batch)
        return super().forward(model, batch)  # type: ignore[misc, unused-ignore]  # TRL < 1.6 only

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """TRL's evaluation step, as TRL < 1.6 does it on every TRL: the loss, and dummy logits and labels (zeros)
        unless ``prediction_loss_only``, so that ``compute_metrics`` is called. (From 1.6 TRL would ask
        :meth:`compute_loss` for the model's logits, which the hooked loss path does not return.)"""
        if compat.KTO_LOSS_HOOK:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        loss = super().prediction_step(model, inputs, True, ignore_keys=ignore_keys)[0]
        if prediction_loss_only:
            return loss, None, None
        dummy = torch.zeros(1, device=self.accelerator.device)
        return loss, dummy, dummy

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """TRL's training step; the first one raises ``RuntimeError`` unless it went through :meth:`kto_loss`."""
        before = self.loss_calls
        loss = super().training_step(*args, **kwargs)
        if not self._loss_checked:
            if self.loss_calls == before:
                raise RuntimeError(
                    f"{type(self).__name__}: the first training step's loss did not come from KTOSTrainer.kto_loss, "
                    f"so it was not loss_type={self.args.loss_type!r} as configured; stopping. "
                    "Something replaced the loss path (a subclass, a patched method or a TRL change)."
                )
            self._loss_checked = True
        return loss

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        """TRL's preparation, cached per process (:func:`ktos.preparation.cached_prepare`)."""
        return cached_prepare(super()._prepare_dataset, dataset, processing_class, args, dataset_name)
