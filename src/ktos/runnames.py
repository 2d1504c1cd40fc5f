"""Run names: ``{method}_lr{lr}_seed{seed}``, for the library and the Snakemake workflow alike.

Standard library only (and :mod:`ktos.loss_types`, which is too), so the workflow can import it at parse time
whatever environment Snakemake runs in. ``kto_s_lr0.0001_seed3`` is KTO-S at learning rate 1e-4 with seed 3; a
name that does not parse, or names a method other than :data:`METHODS`, is an error.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .loss_types import LOSS_TYPE_NAMES, STUDY_METHODS

#: Methods (the study's keys for ``loss_type``, :data:`ktos.loss_types.STUDY_METHODS`) in display order.
METHODS: tuple[str, ...] = tuple(STUDY_METHODS)
#: How papers write them (:data:`ktos.loss_types.LOSS_TYPE_NAMES`).
METHOD_LABELS: dict[str, str] = {method: LOSS_TYPE_NAMES[loss] for method, loss in STUDY_METHODS.items()}
#: A run's name, as a format string (also the Snakemake output pattern of a run directory).
RUN_NAME_PATTERN = "{method}_lr{lr}_seed{seed}"
_NAME = re.compile(r"(?P<method>[a-z_]+?)_lr(?P<lr>[0-9.]+(?:e[+-]?[0-9]+)?)_seed(?P<seed>[0-9]+)")


class RunKey(NamedTuple):
    """What identifies a run within a study: method, peak learning rate, seed."""

    method: str
    lr: float
    seed: int


def method_label(method: str) -> str:
    """``method_label(KTO_S)`` is ``"KTO-S"``; an unknown method raises ``ValueError``."""
    try:
        return METHOD_LABELS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})") from None


def lr_tag(lr: float) -> str:
    """A learning rate as names and labels write it, 3 significant digits: ``1e-05`` -> ``"1e-5"``,
    ``0.0003`` -> ``"0.0003"``, ``3.16e-4`` -> ``"0.000316"``."""
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m[1].replace("+", "") + m[2], f"{lr:.3g}")


def run_name(method: str, lr: float, seed: int) -> str:
    """``run_name(KTO_S, 1e-4, 3)`` -> ``kto_s_lr0.0001_seed3``."""
    method_label(method)
    return RUN_NAME_PATTERN.format(method=method, lr=lr_tag(lr), seed=int(seed))


def parse_run_name(name: str) -> RunKey:
    """Inverse of :func:`run_name`; ``ValueError`` for anything else (an unknown method included)."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"not a run name (method_lr<rate>_seed<n>): {name!r}")
    method_label(match["method"])
    return RunKey(match["method"], float(match["lr"]), int(match["seed"]))
