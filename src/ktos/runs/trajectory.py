"""The run directory's per-step record: :class:`TrajectoryCallback` writes ``trajectory.jsonl``.

It only records: what a row holds was logged through the trainer's ``log`` first (TRL's metrics,
``update_norm`` from :class:`ktos.update_norm.UpdateNormCallback`, and the probe and step quality
that :class:`ktos.probe.ProbeCallback` hands to :meth:`ktos.trainer.KTOSTrainer.log_step_metrics`),
so ``trainer_state.json`` and every ``report_to`` tracker hold the same values at the same steps.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState

from ..provenance import update_json
from .files import MEASURED_KEYS, RUN_INFO_FILE, TRAJECTORY_FILE, read_trajectory

log = logging.getLogger(__name__)

#: TRL log keys copied into each trajectory row (besides step, epoch, elapsed_s and the measurements).
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
    :data:`TRAJECTORY_KEYS` that were logged and, at the steps where they were measured, the
    :data:`MEASURED_KEYS`. Register it after the callbacks that add to the logs (``UpdateNormCallback``).
    With several processes the first writes. The file is flushed per row, so an interrupted run keeps
    what it logged; on resume, rows past the checkpoint's step are dropped. Each checkpoint keeps a copy
    of the rows so far, which a resumed run restores when the run directory's file was lost (Snakemake
    deletes the outputs of an incomplete job before rerunning it). A non-finite ``loss`` or ``kl`` stops
    training and marks ``run_info.json`` as diverged.
    """

    def __init__(self, run_dir: str | Path, resume_from: str | Path | None = None) -> None:
        self.path = Path(run_dir) / TRAJECTORY_FILE
        self.resume_from = Path(resume_from) if resume_from else None
        self.run_info = Path(run_dir) / RUN_INFO_FILE
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

    def on_log(
        self,
        args: Any,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "loss" not in logs:
            return
        row: dict[str, Any] = {"step": state.global_step, "epoch": logs.get("epoch", state.epoch)}
        row.update({key: float(logs[key]) for key in (*TRAJECTORY_KEYS, *MEASURED_KEYS) if key in logs})
        row["elapsed_s"] = round(time.monotonic() - self._t0, 4)
        if state.is_world_process_zero:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        self._check_finite(row, state, control)

    def _check_finite(self, row: dict[str, Any], state: TrainerState, control: TrainerControl) -> None:
        """Stop training and mark the run diverged when the row's ``loss`` or ``kl`` is not finite."""
        bad = [key for key in ("loss", "kl") if key in row and not math.isfinite(row[key])]
        if not bad or self.diverged_at is not None:
            return
        self.diverged_at = state.global_step
        log.error(
            "training DIVERGED at step %d: %s is %s; stopping, run marked diverged in %s",
            state.global_step,
            " and ".join(bad),
            ", ".join(str(row[k]) for k in bad),
            self.run_info,
        )
        if state.is_world_process_zero:
            update_json(self.run_info, status="diverged", diverged_at_step=state.global_step)
        control.should_training_stop = True
