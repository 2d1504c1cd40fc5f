"""The size of each optimizer update, ``||theta_after - theta_before||_2`` over the trained parameters.

Adam's update per parameter is about the learning rate whatever the gradient's scale, so a loss that
shrinks its gradients may not shrink its steps; the update norm measures the step the optimizer took.
:class:`UpdateNormCallback` snapshots the trainable parameters before each optimizer step and puts the
Euclidean norm of their change (in the parameters' own units, summed over all trainable tensors) into
the step's log as ``update_norm`` (through :meth:`ktos.trainer.KTOSTrainer.log_step_metrics`, so ``log_history``
and every ``report_to`` tracker carry it). :class:`ktos.trainer.KTOSTrainer` attaches it unless
``log_update_norm=False``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState


class UpdateNormCallback(TrainerCallback):
    """Logs ``update_norm``, the L2 norm of the last optimizer step's change to the trainable parameters.

    Costs one copy of the trainable parameters per step (under LoRA, the adapters only). With gradient
    accumulation it is the norm of the one update per optimizer step. ``trainer`` is a
    :class:`ktos.trainer.KTOSTrainer`, whose next training log carries the value.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self._before: list[torch.Tensor] = []
        self._params: list[torch.nn.Parameter] = []

    def on_pre_optimizer_step(
        self, args: Any, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any
    ) -> None:
        self._params = [p for p in model.parameters() if p.requires_grad] if model is not None else []
        self._before = [p.detach().clone() for p in self._params]

    @torch.no_grad()
    def on_optimizer_step(self, args: Any, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if not self._params:
            return
        squares = sum(
            float((p.detach().float() - b.float()).pow(2).sum())
            for p, b in zip(self._params, self._before, strict=True)
        )
        self._before = []
        self.trainer.log_step_metrics({"update_norm": math.sqrt(squares)})
