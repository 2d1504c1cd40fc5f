"""``KTOSConfig``: TRL's ``KTOConfig`` with KTO-S among its ``loss_type`` values, and the KL probe's fields.

A dataclass, so it is usable from Python, from YAML (``ktos train --config``) and from the command line
(``ktos train --loss_type kto_s``), through TRL's ``TrlParser`` as every TRL config is.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from transformers.utils import is_torch_bf16_gpu_available

from . import compat
from .loss_types import KTO, KTO_S, LOSS_TYPE_NAMES, study_method

#: The probe's defaults: a probe asked for with other values and no data to build it from is an error.
KL_PROBE_SIZE, KL_PROBE_STEPS = 64, 1


class DefaultChange(NamedTuple):
    """A ``KTOConfig`` field whose ``KTOSConfig`` default differs on purpose: TRL's default, ktos', and why."""

    trl: str
    ktos: str
    reason: str


#: Every inherited field whose default differs from TRL's ``KTOConfig`` on purpose (the one list:
#: ``tests/test_dropin.py`` compares every other field with TRL's, and docs/library.md shows :func:`defaults_table`).
DEFAULT_CHANGES: dict[str, DefaultChange] = {
    "logging_steps": DefaultChange("10", "1", "one trajectory row (loss, kl, probe KL) per optimizer step"),
    "train_sampling_strategy": DefaultChange(
        "'random' in TRL 1.5.1 (TRL 1.16.0's is 'sequential' too)",
        "'sequential'",
        "the only value accepted: TRL builds each example's mismatched KL pair from its neighbours in file order, "
        "and `ktos balance` writes the batch order",
    ),
    "use_cpu": DefaultChange(
        "False",
        "True on a machine with neither CUDA nor MPS",
        "so that training runs there instead of failing TRL's bf16 check",
    ),
    "bf16": DefaultChange(
        "True unless fp16 (resolved in __post_init__)",
        "False on a machine with neither CUDA nor MPS; on MPS, whether it supports bf16; with CUDA, TRL's",
        "TRL's bf16 needs a GPU: on a CPU-only machine `KTOConfig()` raises \"Your setup doesn't support bf16/gpu\"",
    ),
    "loss_type": DefaultChange(
        "'kto'",
        "None, resolved to 'kto' (TRL's) or, with use_kto_s=True, 'kto_s'",
        "a sentinel so that `use_kto_s` can choose it; unset, ktos trains TRL's KTO as TRL does",
    ),
}


def defaults_table() -> str:
    """:data:`DEFAULT_CHANGES` as the Markdown table docs/library.md shows."""
    rows = [f"| `{name}` | {c.trl} | {c.ktos} | {c.reason} |" for name, c in DEFAULT_CHANGES.items()]
    return "\n".join(["| field | TRL's `KTOConfig` | `KTOSConfig` | why |", "|---|---|---|---|", *rows])


#: ``report_to`` trackers: transformers' availability check (in ``transformers.integrations.integration_utils``)
#: and what installs the tracker.
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("is_tensorboard_available", 'pip install "ktos[tracking]"'),
    "wandb": ("is_wandb_available", "pip install wandb"),
    "trackio": ("is_trackio_available", "pip install trackio"),
    "mlflow": ("is_mlflow_available", "pip install mlflow"),
    "clearml": ("is_clearml_available", "pip install clearml"),
    "dvclive": ("is_dvclive_available", "pip install dvclive"),
    "swanlab": ("is_swanlab_available", "pip install swanlab"),
    "codecarbon": ("is_codecarbon_available", "pip install codecarbon"),
}


def check_class_weight(name: str, value: float) -> None:
    """``ValueError`` unless the class weight ``name`` is finite and > 0 (a NaN weight trains a NaN loss, 0 or a
    negative weight drops or reverses a class)."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0; got {value!r}")


def check_trackers(report_to: list[str] | str | None) -> None:
    """``ImportError`` naming what to install when a ``report_to`` tracker's package is missing (transformers
    would fail later, at the trainer's construction, with a message that names no ktos extra)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    utils = importlib.import_module("transformers.integrations.integration_utils")
    for name in names:
        if name in TRACKERS and not getattr(utils, TRACKERS[name][0])():
            hint = TRACKERS[name][1]
            extra = "" if name == "tensorboard" else ' (the "ktos[tracking]" extra installs tensorboard only)'
            raise ImportError(f"report_to={name!r} needs the {name} package, which is not installed: {hint}{extra}")


@dataclass
class KTOSConfig(compat.KTOConfig):
    r"""Configuration for [`KTOSTrainer`]: every field of TRL's `KTOConfig`, plus:

    Parameters:
        loss_type (`str`, defaults to `"kto"`, TRL's default; KTO-S's `"kto_s"` with `use_kto_s=True`):
            TRL's field, with TRL's values and one more. `"kto"`: TRL's KTO (reference point `z0`), the default
            so that swapping `KTOConfig` for `KTOSConfig` trains what TRL trains: in the study KTO-S lowers its
            own reference point more than the policy's drift (below the headline's learning rate its policy KL
            ends as high as KTO's or higher), and at matched policy KL of 0.5 to 1 nats both reach the same
            accuracy (docs/results.md), so ktos does not switch the algorithm silently. KTO-S (the opt-in, also
            `use_kto_s=True`): the sign-corrected loss, whose per-example reference point is `-sign(r) * z0`.
            `"apo_zero_unpaired"`: KTO-zero, reference point 0, computed by TRL's own code (TRL then builds no
            mismatched pairs and logs `kl` as 0; the probe still measures the KL). Names: `ktos.loss_types`.
        use_kto_s (`bool`, *optional*):
            The notes' toggle: `True` means KTO-S's loss type, `False` any other (`"kto"` when `loss_type` is not
            given, as when neither is). Given with a `loss_type` it contradicts, it is an error. After
            construction it says whether the loss type is KTO-S's.
        desirable_weight, undesirable_weight (`float`, TRL's defaults `1.0`):
            Must be finite and > 0 (else `ValueError`).
        kl_probe_size (`int`, defaults to `64`):
            Number of fixed held-out mismatched prompt/completion pairs on which the KL to the reference
            model is measured during training (a low-noise companion of the logged batch `kl`). `0` turns
            the probe off. `KTOSTrainer` builds the probe itself from `kl_probe_dataset` or else its
            `eval_dataset`. Without either the probe is off: with the defaults (64 pairs every step)
            `KTOSTrainer` warns once; with a size or interval other than the defaults, asked for explicitly, it
            raises `ValueError`. It logs `probe_kl`, `probe_kl_se` and `probe_kl_per_token` to `log_history`
            and every `report_to` tracker.
        kl_probe_steps (`int`, defaults to `1`):
            Measure the probe every this many optimizer steps (and at step 1 and the last).
        kl_probe_dataset (`str`, *optional*):
            The probe's held-out data: any source `ktos.load_feedback` reads (a file, a folder, a hub id). Default:
            the trainer's `eval_dataset`.
        policy_kl_size (`int`, defaults to `0`):
            Number of fixed held-out prompts (the first distinct ones of `kl_probe_dataset` or else `eval_dataset`)
            on which the policy's KL to the reference model is measured on its own samples: one completion per
            prompt, the exact per-token KL summed over it (`ktos.policy_kl`). Logs `policy_kl` (nats per sequence),
            `policy_kl_se` and `policy_kl_tokens`. `0` turns it off (the default: it samples, which costs about
            `policy_kl_size * policy_kl_max_new_tokens` forward steps per measurement; see docs/methods.md). Set
            without held-out data, `KTOSTrainer` raises `ValueError`.
        policy_kl_steps (`int`, defaults to `5`):
            Measure the policy KL every this many optimizer steps (and at step 1 and the last).
        policy_kl_max_new_tokens (`int`, defaults to `32`):
            Most tokens sampled per completion (sampling stops earlier at EOS); the KL is that of sequences this
            long at most.
        policy_kl_seed (`int`, *optional*):
            Seed of the policy KL's own sampling generator, reseeded at every measurement (the same noise at every
            step; the global RNG is untouched). Default: `seed`.
        log_update_norm (`bool`, defaults to `True`):
            Log `update_norm`, the L2 norm of each optimizer step's change to the trainable parameters (costs one
            copy of them).
        fuse_forward_passes (`bool`, defaults to `False`):
            Score the completions and the mismatched KL pairs in one model call wherever TRL makes two calls
            without gradients (the reference model's, and evaluation): rows stacked and right-padded to the
            longer length. Same loss, `kl`, rewards and gradients as TRL up to floating-point order; see
            docs/performance.md.

    Defaults that differ from `KTOConfig`, each with its reason: :data:`DEFAULT_CHANGES` (`logging_steps=1`,
    `train_sampling_strategy="sequential"`, on a machine with neither CUDA nor Apple's MPS `use_cpu=True` and
    `bf16=False` unless set, and `loss_type`'s sentinel, resolved to TRL's `"kto"`). A `report_to` tracker whose
    package is missing raises `ImportError` naming what to install.
    """

    loss_type: str | None = field(  # type: ignore[assignment]  # None until __post_init__ resolves it
        default=None,
        metadata={
            "help": "'kto' (TRL's KTO, the default: a drop-in trains what TRL trains), 'kto_s' (KTO-S, the opt-in; "
            "whether it is more than a smaller step is undecided, docs/results.md) or 'apo_zero_unpaired' "
            "(KTO-zero, TRL's code).",
            "choices": list(LOSS_TYPE_NAMES),
        },
    )
    use_kto_s: bool | None = field(
        default=None,
        metadata={"help": "True: loss_type 'kto_s'; False: another loss type ('kto' unless loss_type says)."},
    )
    kl_probe_size: int = field(
        default=KL_PROBE_SIZE,
        metadata={"help": "Held-out mismatched pairs for the per-step KL probe (0 turns it off)."},
    )
    kl_probe_steps: int = field(
        default=KL_PROBE_STEPS,
        metadata={"help": "Measure the KL probe every this many optimizer steps."},
    )
    kl_probe_dataset: str | None = field(
        default=None,
        metadata={"help": "Held-out data for the KL probe (a file, folder or hub id); default: the eval dataset."},
    )
    policy_kl_size: int = field(
        default=0,
        metadata={"help": "Held-out prompts for the policy KL on the policy's own samples (0 turns it off)."},
    )
    policy_kl_steps: int = field(
        default=5,
        metadata={"help": "Measure the policy KL every this many optimizer steps (and at step 1 and the last)."},
    )
    policy_kl_max_new_tokens: int = field(
        default=32,
        metadata={"help": "Most tokens sampled per completion for the policy KL (sampling stops at EOS)."},
    )
    policy_kl_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the policy KL's own sampler, the same at every measurement; default: seed."},
    )
    log_update_norm: bool = field(default=True, metadata={"help": "Log update_norm, each step's L2 parameter change."})
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
        self._resolve_loss_type()
        self._default_device()
        check_class_weight("desirable_weight", self.desirable_weight)
        check_class_weight("undesirable_weight", self.undesirable_weight)
        super().__post_init__()
        if self.kl_probe_size < 0 or self.kl_probe_steps < 1:
            raise ValueError("kl_probe_size must be >= 0 and kl_probe_steps >= 1")
        if self.policy_kl_size < 0 or self.policy_kl_steps < 1 or self.policy_kl_max_new_tokens < 1:
            raise ValueError("policy_kl_size must be >= 0, policy_kl_steps >= 1 and policy_kl_max_new_tokens >= 1")
        check_trackers(self.report_to)

    @property
    def probe_asked(self) -> bool:
        """Whether the KL probe was asked for explicitly: a size (not 0) or an interval other than the defaults."""
        return self.kl_probe_size not in (0, KL_PROBE_SIZE) or self.kl_probe_steps != KL_PROBE_STEPS

    def _resolve_loss_type(self) -> None:
        """``loss_type`` from itself and ``use_kto_s``; ``ValueError`` when they contradict or it is unknown."""
        if self.loss_type is not None and self.use_kto_s is not None and self.use_kto_s != (self.loss_type == KTO_S):
            raise ValueError(
                f"use_kto_s={self.use_kto_s} contradicts loss_type={self.loss_type!r}: use_kto_s=True means "
                "loss_type='kto_s'; give one of the two"
            )
        if self.loss_type is None:
            self.loss_type = KTO_S if self.use_kto_s else KTO  # TRL's default unless KTO-S is asked for
        if self.loss_type not in LOSS_TYPE_NAMES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPE_NAMES)}; got {self.loss_type!r}")
        self.use_kto_s = self.loss_type == KTO_S

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
        """The study's key for ``loss_type`` (a key of :data:`ktos.loss_types.LOSSES`), as run directories name it."""
        return study_method(str(self.loss_type))
