"""The losses ktos trains, one record each (:data:`LOSSES`): every other place reads its names, labels, colours and
reference points from here.

Standard library only: the Snakemake workflow imports it (through :mod:`ktos.runnames`) at parse time.

* ``"kto"``: KTO, study key ``kto``: ``w * (1 - sigmoid(beta * s * (r - z0)))``;
* ``"kto_s"``: KTO-S, study key ``kto_s``: ``w * (1 - sigmoid(beta * s * (r + sign(r) * z0)))``;
* ``"apo_zero_unpaired"``: KTO-zero, study key ``kto_zero``: ``w * (1 - sigmoid(beta * s * r))``, TRL's unpaired
  APO-zero, computed by TRL's own code (TRL then builds no mismatched pairs and logs ``kl`` as 0).

(``r``, ``z0``, ``s`` and ``w`` as in :mod:`ktos.losses`; losses in units of the class weight ``w``.) The study's key
is TRL's ``loss_type`` except for KTO-zero, whose key ``kto_zero`` the committed run directories and tables carry.
"""

from __future__ import annotations

from typing import NamedTuple


class LossType(NamedTuple):
    """One loss: the study's key (configs, run directories, records, tables), TRL's ``loss_type``, how papers and
    legends name it, its colour in figures (Okabe-Ito), its reference point and where its code comes from."""

    key: str
    loss_type: str
    label: str
    colour: str
    reference_point: str
    origin: str


#: Every loss, in display order.
LOSSES: tuple[LossType, ...] = (
    LossType("kto", "kto", "KTO", "#D55E00", "reference point z0, the batch's mismatched-pair KL estimate",
             "TRL's KTO"),
    LossType("kto_s", "kto_s", "KTO-S", "#0072B2",
             "reference point -sign(r) * z0, sign-corrected from the batch's mismatched-pair KL estimate z0",
             "ktos' KTO-S, not TRL's KTO"),
    LossType("kto_zero", "apo_zero_unpaired", "KTO-zero", "#009E73", "reference point 0, no KL estimate",
             "TRL's APO-zero unpaired"),
)  # fmt: skip
#: The study's keys, for code that names one method.
KTO, KTO_S, KTO_ZERO = (loss.key for loss in LOSSES)
BY_KEY: dict[str, LossType] = {loss.key: loss for loss in LOSSES}
BY_LOSS_TYPE: dict[str, LossType] = {loss.loss_type: loss for loss in LOSSES}
#: Every ``KTOSConfig.loss_type``, with how papers, figures and model cards name it.
LOSS_TYPE_NAMES: dict[str, str] = {loss.loss_type: loss.label for loss in LOSSES}
#: Each loss type's reference point, as the trainer's announcement and model card state it.
REFERENCE_POINTS: dict[str, str] = {loss.loss_type: loss.reference_point for loss in LOSSES}
#: The loss types TRL computes with its own code (ktos passes them through): KTO-zero is TRL's unpaired APO-zero.
TRL_COMPUTED: frozenset[str] = frozenset({BY_KEY[KTO_ZERO].loss_type})
#: The study's method keys to ``loss_type``, in display order.
STUDY_METHODS: dict[str, str] = {loss.key: loss.loss_type for loss in LOSSES}


def announcement(loss_type: str) -> str:
    """The one line ``KTOSTrainer`` logs at WARNING naming the loss it trains and its reference point."""
    loss = BY_LOSS_TYPE[loss_type]
    return f"ktos: training loss_type={loss_type!r} ({loss.origin}; {loss.reference_point})"


def study_method(loss_type: str) -> str:
    """The study's key for ``loss_type`` (``"apo_zero_unpaired"`` -> ``"kto_zero"``); ``ValueError`` if unknown."""
    if loss_type not in BY_LOSS_TYPE:
        raise ValueError(f"unknown loss_type {loss_type!r} (known: {', '.join(LOSS_TYPE_NAMES)})")
    return BY_LOSS_TYPE[loss_type].key
