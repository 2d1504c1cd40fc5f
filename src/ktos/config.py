"""``KTOSConfig``: TRL's ``KTOConfig`` with the fields of KTO-S, KTO-zero and the KL probe.

A dataclass, so it is usable from Python, from YAML (``ktos train --config``) and from the command line
(``ktos train --use_kto_s true``), through TRL's ``TrlParser`` as every TRL config is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.utils import is_torch_bf16_gpu_available

from . import compat


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
        fuse_forward_passes (`bool`, defaults to `False`):
            Score the completions and the mismatched KL pairs in one model call wherever TRL makes two calls
            without gradients (the reference model's, and evaluation): rows stacked and right-padded to the
            longer length. Same loss, `kl`, rewards and gradients as TRL up to floating-point order; see
            docs/performance.md.

    Defaults that differ from `KTOConfig`: `logging_steps=1` (one trajectory row per optimizer step);
    `train_sampling_strategy="sequential"` on every TRL version (the only value accepted); on a machine
    with neither CUDA nor Apple's MPS, `use_cpu=True` and `bf16=False` unless set (on MPS, `bf16` defaults to
    whether the MPS device supports it).
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
    fuse_forward_passes: bool = field(
        default=False,
        metadata={"help": "One model call for the completions and KL pairs wherever TRL makes two without gradients."},
    )

    def __post_init__(self) -> None:
        self._default_device()
        super().__post_init__()
        if self.kl_probe_size < 0 or self.kl_probe_steps < 1:
            raise ValueError("kl_probe_size must be >= 0 and kl_probe_steps >= 1")
        if self.reference_point not in ("kl", "zero"):
            raise ValueError(f"reference_point must be 'kl' or 'zero', got {self.reference_point!r}")

    def _default_device(self) -> None:
        """With CUDA: TRL's defaults. With Apple's MPS (no CUDA): the MPS device, bf16 only where it supports it
        (unless set). With neither: ``use_cpu=True`` and fp32 (``bf16=False``) unless set."""
        if torch.cuda.is_available():
            return
        if torch.backends.mps.is_available():
            if self.bf16 is None and not self.fp16:
                self.bf16 = is_torch_bf16_gpu_available()
            return
        self.use_cpu = True
        if self.bf16 is None:
            self.bf16 = False

    @property
    def method(self) -> str:
        """``"kto_zero"``, ``"kto_s"`` or ``"kto"``: the name runs and tables use."""
        if self.reference_point == "zero":
            return "kto_zero"
        return "kto_s" if self.use_kto_s else "kto"
