"""How the verdict prints numbers: 3 significant digits (:func:`fmt`), bootstrap intervals' ends 2
(:func:`interval`), fractions as signed percentages (:func:`pct`), p-values (:func:`p_value`)."""

from __future__ import annotations

import numpy as np


def fmt(x: float, digits: int = 3) -> str:
    """A number in ``digits`` significant digits; ``—`` for NaN."""
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def interval(low: float, high: float) -> str:
    """A bootstrap interval ``[low, high]``, its ends in 2 significant digits: at 20,000 resamples the third still
    moves with the bootstrap seed (:data:`ktos.study.readings.base_factor.N_BOOT_POOLED`)."""
    return f"[{fmt(low, 2)}, {fmt(high, 2)}]"


def pct(x: float) -> str:
    """A fraction as a signed percentage."""
    return "—" if not np.isfinite(x) else f"{100 * x:+.1f}%"


def p_value(p: float) -> str:
    """``p = 0.012`` or ``p < 0.001``."""
    return "p = —" if not np.isfinite(p) else (f"p = {p:.2g}" if p >= 0.001 else "p < 0.001")


def trend_phrase(trend: str) -> str:
    """A KL trend of :mod:`ktos.study.readings.trend_rules` as a predicate: a collapsed run's or cell's KL is not
    judged."""
    if trend == "collapsed":
        return "is not judged: the runs collapsed (final task accuracy below half the base's)"
    return str(trend)
