"""One progress bar for a training run: the step, and the last loss, ``kl``, probe KL and policy KL beside it."""

from __future__ import annotations

from typing import Any

from transformers import ProgressCallback

#: What the training bar's postfix shows, from each training log (the probe's KL at its steps).
PROGRESS_KEYS = ("loss", "kl", "probe_kl", "policy_kl")


class StepProgressCallback(ProgressCallback):
    """transformers' progress bar, whose training logs set the bar's postfix (``loss``, ``kl``, ``probe_kl``: the
    last measured) instead of writing one line per step; other logs (evaluation) are written as transformers does."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return super().on_log(args, state, control, logs=logs, **kwargs)
        if state.is_world_process_zero and self.training_bar is not None:
            self.postfix = getattr(self, "postfix", {})
            self.postfix.update({k: f"{float(logs[k]):.4g}" for k in PROGRESS_KEYS if k in logs})
            self.training_bar.set_postfix(self.postfix, refresh=False)
        return None


def use_step_bar(trainer: Any) -> None:
    """Replace ``trainer``'s transformers progress bar, if it shows one, with :class:`StepProgressCallback`."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(StepProgressCallback())
