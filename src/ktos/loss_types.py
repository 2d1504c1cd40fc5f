"""The losses ktos trains, named once: TRL's ``loss_type`` strings plus ``"kto_s"``, and the study's keys for them.

Standard library only: the Snakemake workflow imports it (through :mod:`ktos.runnames`) at parse time.

* ``"kto"``: KTO, study key ``kto``: ``w * (1 - sigmoid(beta * s * (r - z0)))``;
* ``"kto_s"``: KTO-S, study key ``kto_s``: ``w * (1 - sigmoid(beta * s * (r + sign(r) * z0)))``;
* ``"apo_zero_unpaired"``: KTO-zero, study key ``kto_zero``: ``w * (1 - sigmoid(beta * s * r))``, TRL's unpaired
  APO-zero, computed by TRL's own code (TRL then builds no mismatched pairs and logs ``kl`` as 0).

(``r``, ``z0``, ``s`` and ``w`` as in :mod:`ktos.losses`; losses in units of the class weight ``w``.)
"""

from __future__ import annotations

#: Every ``KTOSConfig.loss_type``, with how papers, figures and model cards name it.
LOSS_TYPE_NAMES: dict[str, str] = {"kto": "KTO", "kto_s": "KTO-S", "apo_zero_unpaired": "KTO-zero"}
#: Each loss type's reference point, as the trainer's announcement and model card state it.
REFERENCE_POINTS: dict[str, str] = {
    "kto": "reference point z0, the batch's mismatched-pair KL estimate",
    "kto_s": "reference point -sign(r) * z0, sign-corrected from the batch's mismatched-pair KL estimate z0",
    "apo_zero_unpaired": "reference point 0, no KL estimate",
}
#: How the trainer's announcement names each loss type's origin.
ORIGINS: dict[str, str] = {
    "kto": "TRL's KTO",
    "kto_s": "ktos' KTO-S, not TRL's KTO",
    "apo_zero_unpaired": "TRL's APO-zero unpaired",
}
#: The loss types TRL computes with its own code (ktos passes them through): KTO-zero is TRL's unpaired APO-zero.
TRL_COMPUTED: frozenset[str] = frozenset({"apo_zero_unpaired"})
#: The study's method keys, as run directories, ``run_info.json`` and the committed trajectories write them, to
#: ``loss_type``; in display order.
STUDY_METHODS: dict[str, str] = {"kto": "kto", "kto_s": "kto_s", "kto_zero": "apo_zero_unpaired"}


def announcement(loss_type: str) -> str:
    """The one line ``KTOSTrainer`` logs at WARNING naming the loss it trains and its reference point."""
    return f"ktos: training loss_type={loss_type!r} ({ORIGINS[loss_type]}; {REFERENCE_POINTS[loss_type]})"


def study_method(loss_type: str) -> str:
    """The study's key for ``loss_type`` (``"apo_zero_unpaired"`` -> ``"kto_zero"``); ``ValueError`` if unknown."""
    for method, known in STUDY_METHODS.items():
        if known == loss_type:
            return method
    raise ValueError(f"unknown loss_type {loss_type!r} (known: {', '.join(LOSS_TYPE_NAMES)})")
