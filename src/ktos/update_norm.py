"""The size of each optimizer update, ``||theta_after - theta_before||_2`` over the trained parameters.

Adam's update per parameter is about the learning rate whatever the gradient's scale, so a loss that
shrinks its gradients may not shrink its steps; the update norm measures the step the optimizer took.
:class:`UpdateNormCallback` snapshots the trainable parameters before each optimizer step and puts the
Euclidean norm of their change (in the parameters' own units, summed over all trainable tensors) into
the step's logs as ``update_norm``, where :class:`ktos.study.trajectory.TrajectoryCallback` records it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState


class UpdateNormCallback(TrainerCallback):
    """Logs ``update_norm``, the L2 norm of the last optimizer step's change to the trainable parameters.

    Costs one copy of the trainable parameters per step (under LoRA, the adapters only). With gradient
    accumulation it is the norm of the one update per optimizer step. Register it before the callbacks
    that read ``update_norm`` from the logs.
    """

    def __init__(self) -> None:
        self._before: list[torch.Tensor] = []
        self._params: list[torch.nn.Parameter] = []
        self.last: float = math.nan

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
        self.last = math.sqrt(squares)
        self._before = []

    def on_log(
        self,
        args: Any,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is not None and "loss" in logs and math.isfinite(self.last):
            logs["update_norm"] = self.last
