"""KTO-S on TRL: ``KTOSConfig``, ``KTOSTrainer`` and label checks.

``KTOSTrainer`` is TRL's ``KTOTrainer`` (TRL 1.5.1 to 1.16.0) whose loss is :func:`ktos.losses.kto_loss`:
KTO-S with ``use_kto_s=True``, exactly TRL's KTO loss with ``False``. On TRL < 1.6 TRL's own forward
passes call the overridden ``kto_loss``; from 1.6 on, where TRL inlines its loss, :mod:`ktos.compat`
computes the same log-probabilities and calls it (see there). Configurations whose training loss
would not go through ``kto_loss`` are refused at construction, and the first training step checks
that it did.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainerCallback, TrainerControl, TrainerState

from . import compat, losses
from .data import DataValidationError, normalise_labels
from .probe import KLProbe
from .quality import HALVES
from .provenance import update_json
from .rundir import RUN_INFO_FILE, TRAJECTORY_FILE, read_trajectory

log = logging.getLogger(__name__)


@dataclass
class KTOSConfig(compat.KTOConfig):
    r"""Configuration for [`KTOSTrainer`]: every field of TRL's `KTOConfig`, plus:

    Parameters:
        use_kto_s (`bool`, defaults to `True`):
            Use the sign-corrected loss KTO-S, whose per-example reference point is `-sign(r) * z0`.
            `False` runs plain KTO (TRL's loss, reference point `z0`).
        reference_point (`str`, defaults to `"kl"`):
            `"kl"`: the KL estimate `z0` is the reference point (KTO, or KTO-S with `use_kto_s`). `"zero"`: the
            reference point is 0 (KTO-zero, HALOs' `kto-zero`; `use_kto_s` then has no effect), which asks
            whether any reference point matters. `z0` is still measured and logged as `kl`.
        kl_probe_size (`int`, defaults to `64`):
            Number of fixed held-out mismatched prompt/completion pairs on which the KL to the reference
            model is measured during training (a low-noise companion of the logged batch `kl`). `0` turns
            the probe off. Needs an evaluation dataset.
        kl_probe_steps (`int`, defaults to `1`):
            Measure the probe every this many optimizer steps (and at step 1).

    Defaults that differ from `KTOConfig`: `logging_steps=1` (one trajectory row per optimizer step);
    `train_sampling_strategy="sequential"` on every TRL version (the only value accepted); on a machine
    without a GPU, `use_cpu=True` and `bf16=False` unless set.
    """

    use_kto_s: bool = field(
        default=True,
        metadata={"help": "Use KTO-S (reference point -sign(r)*z0). False runs plain KTO (reference point z0)."},
    )
    reference_point: str = field(
        default="kl",
        metadata={
            "help": "'kl': the KL estimate z0 is the reference point (KTO, KTO-S); 'zero': 0 (KTO-zero).",
            "choices": ["kl", "zero"],
        },
    )
    kl_probe_size: int = field(
        default=64,
        metadata={"help": "Held-out mismatched pairs for the per-step KL probe (0 turns it off)."},
    )
    kl_probe_steps: int = field(
        default=1,
        metadata={"help": "Measure the KL probe every this many optimizer steps."},
    )
    logging_steps: float = field(
        default=1,
        metadata={"help": "Log every X updates steps (1: one trajectory row per optimizer step)."},
    )
    train_sampling_strategy: str = field(
        default="sequential",
        metadata={"help": "Only 'sequential': the training set is read in file order (ktos balance writes it)."},
    )

    def __post_init__(self) -> None:
        if not torch.cuda.is_available():
            self.use_cpu = True
            if self.bf16 is None:
                self.bf16 = False
        super().__post_init__()
        if self.kl_probe_size < 0 or self.kl_probe_steps < 1:
            raise ValueError("kl_probe_size must be >= 0 and kl_probe_steps >= 1")
        if self.reference_point not in ("kl", "zero"):
            raise ValueError(f"reference_point must be 'kl' or 'zero', got {self.reference_point!r}")

    @property
    def method(self) -> str:
        """``"kto_zero"``, ``"kto_s"`` or ``"kto"``: the name runs and tables use."""
        if self.reference_point == "zero":
            return "kto_zero"
        return "kto_s" if self.use_kto_s else "kto"


def check_labels(dataset: Dataset, *, name: str = "train", require_both: bool = True) -> Dataset:
    """Return ``dataset`` with a Python-bool ``label`` column, or raise ``ValueError``.

    Accepted: bools, and the ints 0/1 (coerced to bool). Anything else (2, ``"yes"``, ``None``, 0.5)
    raises an error naming the column and the first offending rows. With ``require_both`` a dataset
    holding one label only is refused: KTO's loss needs desirable and undesirable examples (TRL
    only warns). The rules are :func:`ktos.data.normalise_labels`'s.
    """
    if "label" not in dataset.column_names:
        raise DataValidationError(f"{name} dataset: missing column 'label' (columns: {dataset.column_names})")
    if len(dataset) == 0:
        raise DataValidationError(f"{name} dataset: no rows")
    raw = dataset["label"]
    labels = normalise_labels(f"{name} dataset", raw, require_both=require_both)
    if any(not isinstance(v, bool) for v in raw):
        dataset = dataset.remove_columns("label").add_column("label", labels)
    return dataset


def bypasses(args: KTOSConfig, kwargs: dict[str, Any]) -> list[str]:
    """Why a trainer built from ``args`` and ``kwargs`` would not train through ``ktos.losses`` (empty if it would).

    TRL's Liger path computes a fused KTO loss of its own; ``loss_type`` other than ``"kto"`` is another
    loss; ``compute_loss_func`` replaces the loss; ``sync_ref_model`` moves the reference model that KL
    is measured against; a sampler other than sequential breaks the batch order the balance stage
    wrote and TRL's mismatched KL pairs.
    """
    reasons = []
    if args.loss_type != "kto":
        reasons.append(f"loss_type={args.loss_type!r} is another loss (only 'kto' is KTO/KTO-S)")
    if args.use_liger_kernel:
        reasons.append("use_liger_kernel=True: TRL's Liger path computes its own fused KTO loss")
    if getattr(args, "sync_ref_model", False):
        reasons.append("sync_ref_model=True: the reference model, and so the KL, would move during training")
    strategy = getattr(args, "train_sampling_strategy", "sequential")
    if strategy != "sequential":
        reasons.append(f"train_sampling_strategy={strategy!r}: the batch order and KL pairs need 'sequential'")
    if kwargs.get("compute_loss_func") is not None:
        reasons.append("compute_loss_func replaces the loss")
    return reasons


class KTOSTrainer(compat.KTOTrainer):
    """TRL's ``KTOTrainer`` whose loss is KTO-S (``args.use_kto_s=True``) or plain KTO.

    Before TRL sees the data, labels are checked by :func:`check_labels` (train set: both labels
    required). Configurations listed by :func:`bypasses` raise ``ValueError``. The training set is read
    in file order. The first training step raises ``RuntimeError`` if its loss did not come from
    :meth:`kto_loss`.
    """

    def __init__(
        self,
        model: Any,
        ref_model: Any = None,
        args: KTOSConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None or not isinstance(args, KTOSConfig):
            raise TypeError("KTOSTrainer needs a KTOSConfig as `args`")
        reasons = bypasses(args, kwargs)
        if reasons:
            raise ValueError("KTOSTrainer cannot train through the ktos loss with " + "; ".join(reasons))
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        train_dataset = check_labels(train_dataset, name="train")
        if eval_dataset is not None:
            eval_dataset = check_labels(eval_dataset, name="eval", require_both=False)
        self.loss_calls = 0
        self._loss_checked = False
        log.info(
            "%s (TRL %s): running %s with beta=%g (desirable_weight=%g, undesirable_weight=%g)",
            type(self).__name__,
            compat.TRL_VERSION,
            {
                "kto_s": "KTO-S (sign-corrected reference point -sign(r)*z0)",
                "kto": "plain KTO (reference point z0)",
                "kto_zero": "KTO-zero (reference point 0)",
            }[args.method],
            args.beta,
            args.desirable_weight,
            args.undesirable_weight,
        )
        super().__init__(
            model=model, ref_model=ref_model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs
        )

    @property
    def method(self) -> str:
        """``"kto_s"`` or ``"kto"``, read from the config at call time."""
        return self.args.method

    def kto_loss(
        self,
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        policy_KL_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor,
        reference_rejected_logps: torch.Tensor,
        reference_KL_logps: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's per-example losses via :func:`ktos.losses.kto_loss` (TRL's ``kto_loss`` signature).

        ``z0`` is gathered across processes as TRL does (mean of the per-process means, clamped at 0).
        Every call is counted in ``loss_calls``.
        """
        z0 = (policy_KL_logps - reference_KL_logps).mean().detach()
        z0 = self.accelerator.gather_for_metrics(z0).mean().clamp(min=0)
        self.loss_calls += 1
        return losses.kto_loss(
            policy_chosen_logps,
            policy_rejected_logps,
            policy_KL_logps,
            reference_chosen_logps,
            reference_rejected_logps,
            reference_KL_logps,
            beta=self.beta,
            desirable_weight=self.desirable_weight,
            undesirable_weight=self.undesirable_weight,
            sign_correction=self.args.use_kto_s,
            kl=z0,
            zero_reference=self.args.reference_point == "zero",
        )

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """TRL's loss path where it calls :meth:`kto_loss` (TRL < 1.6), else :func:`ktos.compat.hooked_compute_loss`."""
        if compat.KTO_LOSS_HOOK:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if return_outputs:
            raise NotImplementedError("KTOSTrainer returns the loss only (no logits): evaluate with prediction_loss_only")
        return compat.hooked_compute_loss(self, model, inputs)

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """TRL's training step; the first one raises ``RuntimeError`` unless it went through :meth:`kto_loss`."""
        before = self.loss_calls
        loss = super().training_step(*args, **kwargs)
        if not self._loss_checked:
            if self.loss_calls == before:
                raise RuntimeError(
                    f"{type(self).__name__}: the first training step's loss did not come from KTOSTrainer.kto_loss, "
                    f"so it was not {self.args.method} as configured; stopping. "
                    "Something replaced the loss path (a subclass, a patched method or a TRL change)."
                )
            self._loss_checked = True
        return loss

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        """TRL's preparation, cached per process (:func:`ktos.compat.cached_prepare`)."""
        return compat.cached_prepare(super()._prepare_dataset, dataset, processing_class, args, dataset_name)

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        dataset = next(iter([*args, *kwargs.values()]), None)
        return compat.train_sampler(self.train_dataset if dataset is None else dataset)


#: TRL log keys copied into each trajectory row (besides step, epoch, elapsed_s and the probe).
TRAJECTORY_KEYS = (
    "loss",
    "kl",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "learning_rate",
    "grad_norm",
    "update_norm",
)


class TrajectoryCallback(TrainerCallback):
    """Appends one JSON line per logged optimizer step to ``run_dir/trajectory.jsonl`` as training goes.

    Each row holds ``step``, ``epoch``, ``elapsed_s`` (wall seconds since training began), the
    :data:`TRAJECTORY_KEYS` that TRL logged, on probe steps (step 1, every ``probe_steps``-th and the
    last) the :class:`~ktos.probe.KLProbe` values, and at the steps of ``step_quality = (steps, measure)``
    the task quality ``step_quality`` that ``measure()`` returns. With several processes every one
    measures (a sharded model needs all ranks) and the first writes. The file is flushed per row, so an
    interrupted run keeps what it logged; on resume, rows past the checkpoint's step are dropped. Each checkpoint keeps a copy of the rows so far, which a
    resumed run restores when the run directory's file was lost (Snakemake deletes the outputs of an
    incomplete job before rerunning it). A non-finite ``loss`` or ``kl`` stops training and marks
    ``run_info.json`` as diverged.
    """

    def __init__(
        self,
        run_dir: str | Path,
        probe: KLProbe | None = None,
        probe_steps: int = 1,
        step_quality: tuple[list[int], Any] | None = None,
        resume_from: str | Path | None = None,
    ) -> None:
        self.path = Path(run_dir) / TRAJECTORY_FILE
        self.resume_from = Path(resume_from) if resume_from else None
        self.run_info = Path(run_dir) / RUN_INFO_FILE
        self.probe = probe
        self.probe_steps = probe_steps
        self.quality_steps, self.measure_quality = step_quality or ([], None)
        self._measured: dict[str, float] = {}
        self._t0 = time.monotonic()
        self.diverged_at: int | None = None

    def on_train_begin(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        kept = [row for row in read_trajectory(self.path) if row["step"] <= state.global_step]
        if self.resume_from is not None:
            saved = read_trajectory(self.resume_from / TRAJECTORY_FILE)
            kept = saved if len(saved) > len(kept) else kept
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))
        offset = kept[-1]["elapsed_s"] if kept else 0.0
        if kept:
            log.info("resuming at step %d: kept %d trajectory rows", state.global_step, len(kept))
        self._t0 = time.monotonic() - offset

    def on_save(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir() and self.path.exists():
            shutil.copyfile(self.path, checkpoint / TRAJECTORY_FILE)

    def on_step_end(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        step = state.global_step
        if self.probe is not None and (step == 1 or step % self.probe_steps == 0 or step == state.max_steps):
            self._measured = self.probe.measure()
        if step in self.quality_steps:
            quality = self.measure_quality()
            self._measured["step_quality"] = quality["value"]
            self._measured.update({f"step_quality_{half}": quality[f"value_{half}"] for half in HALVES if f"value_{half}" in quality})

    def on_log(
        self, args: Any, state: TrainerState, control: TrainerControl, logs: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        if not logs or "loss" not in logs:
            return
        row: dict[str, Any] = {"step": state.global_step, "epoch": logs.get("epoch", state.epoch)}
        row.update({key: float(logs[key]) for key in TRAJECTORY_KEYS if key in logs})
        row.update(self._measured)
        row["elapsed_s"] = round(time.monotonic() - self._t0, 4)
        self._measured = {}
        if state.is_world_process_zero:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        bad = [key for key in ("loss", "kl") if key in row and not math.isfinite(row[key])]
        if bad and self.diverged_at is None:
            self.diverged_at = state.global_step
            log.error(
                "training DIVERGED at step %d: %s is %s; stopping, run marked diverged in %s",
                state.global_step, " and ".join(bad), ", ".join(str(row[k]) for k in bad), self.run_info,
            )
            if state.is_world_process_zero:
                update_json(self.run_info, status="diverged", diverged_at_step=state.global_step)
            control.should_training_stop = True
