"""The `ktos` command line: stage flags default to the library's defaults; --log-level reaches the libraries."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import transformers
from conftest import feedback_rows

from ktos.cli import build_parser, main


def test_absent_stage_flags_leave_the_librarys_defaults(tmp_path: Path) -> None:
    args = build_parser().parse_args(["split", "--input", "a", "--output", "b"])
    assert vars(args) == {"log_level": "INFO", "command": "split", "in_dir": "a", "out_dir": "b"}


@pytest.mark.parametrize("level", ["ERROR", "DEBUG"])
def test_log_level_reaches_transformers_datasets_and_trl(tmp_path: Path, level: str) -> None:
    source = tmp_path / "feedback.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in feedback_rows(8, 4)))
    assert main(["--log-level", level, "prepare", "--input", str(source), "--output", str(tmp_path / "out")]) == 0
    numeric = logging.getLevelName(level)
    assert transformers.utils.logging.get_verbosity() == numeric
    assert datasets.utils.logging.get_verbosity() == numeric
    assert logging.getLogger("trl").level == numeric


def test_log_level_reaches_libraries_imported_later() -> None:
    code = (
        "from ktos.cli import configure_logging; configure_logging('ERROR'); import transformers, datasets; "
        "print(transformers.utils.logging.get_verbosity(), datasets.utils.logging.get_verbosity())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(logging.ERROR)] * 2
