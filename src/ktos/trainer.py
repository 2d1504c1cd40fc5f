"""KTO-S on TRL: ``KTOSConfig``, ``KTOSTrainer`` and label checks.

``KTOSTrainer`` is TRL 1.5.1's ``KTOTrainer`` with one method replaced, ``kto_loss``, which delegates to
:func:`ktos.losses.kto_loss`. With ``use_kto_s=False`` it computes exactly TRL's KTO loss.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import TrainerCallback, TrainerControl, TrainerState

with warnings.catch_warnings():  # TRL 1.5.1 ships KTOTrainer only under trl.experimental: expected, pinned
    warnings.simplefilter("ignore")
    from trl.experimental.kto import KTOConfig, KTOTrainer

from . import losses
from .data import DataValidationError, normalise_labels
from .probe import KLProbe
from .provenance import update_json
from .trajectories import RUN_INFO_FILE, TRAJECTORY_FILE, read_trajectory

log = logging.getLogger(__name__)



@dataclass
class KTOSConfig(KTOConfig):
    r"""Configuration for [`KTOSTrainer`]: every field of TRL's `KTOConfig`, plus:

    Parameters:
        use_kto_s (`bool`, defaults to `True`):
            Use the sign-corrected loss KTO-S, whose per-example reference point is `-sign(r) * z0`.
            `False` runs plain KTO (TRL's loss, reference point `z0`).
        kl_probe_size (`int`, defaults to `64`):
            Number of fixed held-out mismatched prompt/completion pairs on which the KL to the reference
            model is measured during training (a low-noise companion of the logged batch `kl`). `0` turns
            the probe off. Needs an evaluation dataset.
        kl_probe_steps (`int`, defaults to `1`):
            Measure the probe every this many optimizer steps (and at step 1).

    Defaults that differ from `KTOConfig`: `logging_steps=1` (one trajectory row per optimizer step);
    on a machine without a GPU, `use_cpu=True` and `bf16=False` unless set.
    """

    use_kto_s: bool = field(
        default=True,
        metadata={"help": "Use KTO-S (reference point -sign(r)*z0). False runs plain KTO (reference point z0)."},
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

    def __post_init__(self) -> None:
        if not torch.cuda.is_available():
            self.use_cpu = True
            if self.bf16 is None:
                self.bf16 = False
        super().__post_init__()
        if self.kl_probe_size < 0 or self.kl_probe_steps < 1:
            raise ValueError("kl_probe_size must be >= 0 and kl_probe_steps >= 1")

    @property
    def method(self) -> str:
        """``"kto_s"`` or ``"kto"``: the name runs and tables use."""
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


class KTOSTrainer(KTOTrainer):
    """TRL's ``KTOTrainer`` whose ``kto_loss`` is KTO-S (``args.use_kto_s=True``) or plain KTO.

    Before TRL sees the data, labels are checked by :func:`check_labels` (train set: both labels
    required). Only ``loss_type="kto"`` is supported.
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
        if args.loss_type != "kto":
            raise ValueError(f"KTOSTrainer supports loss_type='kto' only, got {args.loss_type!r}")
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        train_dataset = check_labels(train_dataset, name="train")
        if eval_dataset is not None:
            eval_dataset = check_labels(eval_dataset, name="eval", require_both=False)
        self.use_kto_s = args.use_kto_s
        log.info(
            "%s: running %s with beta=%g (desirable_weight=%g, undesirable_weight=%g)",
            type(self).__name__,
            "KTO-S (sign-corrected reference point -sign(r)*z0)" if args.use_kto_s else "plain KTO (reference point z0)",
            args.beta,
            args.desirable_weight,
            args.undesirable_weight,
        )
        super().__init__(model, ref_model, args, train_dataset, eval_dataset, **kwargs)

    def kto_loss(
        self,
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        policy_KL_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor,
        reference_rejected_logps: torch.Tensor,
        reference_KL_logps: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """TRL's hook: the batch's per-example losses via :func:`ktos.losses.kto_loss`.

        ``z0`` is gathered across processes as TRL does (mean of the per-process means, clamped at 0).
        """
        z0 = (policy_KL_logps - reference_KL_logps).mean().detach()
        z0 = self.accelerator.gather_for_metrics(z0).mean().clamp(min=0)
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
            sign_correction=self.use_kto_s,
            kl=z0,
        )


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
)


class TrajectoryCallback(TrainerCallback):
    """Appends one JSON line per logged optimizer step to ``run_dir/trajectory.jsonl`` as training goes.

    Each row holds ``step``, ``epoch``, ``elapsed_s`` (wall seconds since training began), the
    :data:`TRAJECTORY_KEYS` that TRL logged, and, on probe steps, the :class:`~ktos.probe.KLProbe`
    values. The file is flushed per row, so an interrupted run keeps what it logged; on resume, rows
    past the checkpoint's step are dropped. Each checkpoint keeps a copy of the rows so far, which a
    resumed run restores when the run directory's file was lost (Snakemake deletes the outputs of an
    incomplete job before rerunning it). A non-finite ``loss`` or ``kl`` stops training and marks
    ``run_info.json`` as diverged.
    """

    def __init__(
        self,
        run_dir: str | Path,
        probe: KLProbe | None = None,
        probe_steps: int = 1,
        resume_from: str | Path | None = None,
    ) -> None:
        self.path = Path(run_dir) / TRAJECTORY_FILE
        self.resume_from = Path(resume_from) if resume_from else None
        self.run_info = Path(run_dir) / RUN_INFO_FILE
        self.probe = probe
        self.probe_steps = probe_steps
        self._probe_values: dict[str, float] = {}
        self._t0 = time.monotonic()
        self.diverged_at: int | None = None

    def on_train_begin(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        kept = [row for row in read_trajectory(self.path) if row["step"] <= state.global_step]
        if self.resume_from is not None:
            saved = read_trajectory(self.resume_from / TRAJECTORY_FILE)
            kept = saved if len(saved) > len(kept) else kept
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))
        offset = kept[-1]["elapsed_s"] if kept else 0.0
        if kept:
            log.info("resuming at step %d: kept %d trajectory rows", state.global_step, len(kept))
        self._t0 = time.monotonic() - offset

    def on_save(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir() and self.path.exists():
            shutil.copyfile(self.path, checkpoint / TRAJECTORY_FILE)

    def on_step_end(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        step = state.global_step
        if self.probe is not None and (step == 1 or step % self.probe_steps == 0):
            self._probe_values = self.probe.measure()

    def on_log(
        self, args: Any, state: TrainerState, control: TrainerControl, logs: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        if not logs or "loss" not in logs:
            return
        row: dict[str, Any] = {"step": state.global_step, "epoch": logs.get("epoch", state.epoch)}
        row.update({key: float(logs[key]) for key in TRAJECTORY_KEYS if key in logs})
        row.update(self._probe_values)
        row["elapsed_s"] = round(time.monotonic() - self._t0, 4)
        self._probe_values = {}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        bad = [key for key in ("loss", "kl") if key in row and not math.isfinite(row[key])]
        if bad and self.diverged_at is None:
            self.diverged_at = state.global_step
            log.error(
                "training DIVERGED at step %d: %s is %s; stopping, run marked diverged in %s",
                state.global_step, " and ".join(bad), ", ".join(str(row[k]) for k in bad), self.run_info,
            )
            update_json(self.run_info, status="diverged", diverged_at_step=state.global_step)
            control.should_training_stop = True
