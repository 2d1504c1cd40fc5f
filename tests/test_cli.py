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
    assert vars(args) == {"log_level": None, "command": "split", "in_dir": "a", "out_dir": "b"}


@pytest.mark.parametrize(("flags", "level"), [([], logging.WARNING), (["--log_level", "info"], logging.INFO)])
def test_ktos_train_logs_at_trls_level_unless_log_level_says(tmp_path: Path, flags: list[str], level: int) -> None:
    # As under `trl kto`: transformers and datasets keep their own level (warnings) unless TRL's --log_level is given.
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    source = tmp_path / "bad.jsonl"  # stops after parsing and logging set-up, before any model is loaded
    source.write_text(json.dumps({"prompt": "a", "completion": "", "label": True}) + "\n")
    argv = ["train", "--model_name_or_path", "m", "--train_data", str(source), "--output_dir", str(tmp_path / "run")]
    assert main([*argv, *flags]) == 2
    assert transformers.utils.logging.get_verbosity() == datasets.utils.logging.get_verbosity() == level
    assert logging.getLogger("ktos").getEffectiveLevel() == logging.INFO


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
