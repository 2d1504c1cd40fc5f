"""Every number docs/results.md quotes is a number some generated table under results/reference/ holds.

A weak check, kept for docs/results.md only until its numbers are generated too: most 3-digit numbers are held by
some table. The README's answer is generated and compared exactly (tests/test_answer.py).

A quoted decimal or percentage (outside code) must equal in size, at the precision it is printed with, a
number that some committed table (``ktos tables`` output: the CSV files and verdict.md) holds; a percentage
may also be a fraction in the tables ("57.2% smaller" is the table's -0.572). Whole numbers (counts, steps,
seeds) and version strings (1.5.1) are not checked.
"""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ("docs/results.md",)
#: A signed decimal or scientific number, optionally a percentage; the minus may be typographic.
NUMBER = re.compile(r"(?<![\w.])[-−+]?(?:\d+\.\d+(?:e[-−+]?\d+)?|\d+e[-−]\d+)%?(?!\.?\d)")


def significant(text: str) -> int:
    """Significant digits of a printed number: ``0.0120`` -> 3, ``2.7e-4`` -> 2, ``15.0`` -> 3."""
    mantissa = text.lstrip("+-−").rstrip("%").split("e")[0].replace(".", "").lstrip("0")
    return max(len(mantissa), 1)


def value(text: str) -> float:
    return float(text.replace("−", "-").rstrip("%"))


def round_sig(x: float, digits: int) -> float:
    return 0.0 if x == 0 else round(x, digits - 1 - math.floor(math.log10(abs(x))))


def prose(path: Path) -> str:
    """The text outside fenced code blocks, inline code, links' targets and image paths."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


@cache
def table_values() -> frozenset[float]:
    files = [*REPO.glob("results/reference/*/tables/*.csv"), *REPO.glob("results/reference/*/tables/verdict.md")]
    return frozenset(value(m) for f in files for m in NUMBER.findall(f.read_text(encoding="utf-8")) if m.strip("%"))


def held(text: str) -> bool:
    """Whether a table holds the printed number ``text`` at its precision."""
    x, digits = abs(value(text)), significant(text)
    candidates = [x, x / 100] if text.endswith("%") else [x]
    return any(round_sig(abs(v), digits) == pytest.approx(c, abs=1e-12) for v in table_values() for c in candidates)


@pytest.mark.parametrize("doc", DOCS)
def test_every_quoted_number_is_in_a_generated_table(doc: str) -> None:
    quoted = NUMBER.findall(prose(REPO / doc))
    assert quoted, f"{doc} quotes no numbers: the test would pass vacuously"
    missing = sorted({q for q in quoted if not held(q)})
    assert not missing, f"{doc} quotes numbers that no table under results/reference/ holds: {missing}"


def test_the_check_catches_a_number_made_up() -> None:
    assert held("−35.6%") and held("5.46")  # the headline's paired difference and KTO's final probe KL
    assert not held("6.8342") and not held("−31.2345%")
