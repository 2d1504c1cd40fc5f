"""The state of a ``ktos train`` run directory before a run: finished (left alone), resumable from its last complete
checkpoint, or cleared for a fresh start (``--overwrite``)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ..config import KTOSConfig
from .files import RUN_INFO_FILE, TRAJECTORY_FILE

log = logging.getLogger(__name__)


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The highest-step ``checkpoint-N`` in ``run_dir`` that was fully written (has ``trainer_state.json``)."""
    done = [p for p in run_dir.glob("checkpoint-*") if p.name[11:].isdigit() and (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name[11:]), default=None)


def finished_steps(run_dir: Path, config: KTOSConfig) -> int | None:
    """The steps a finished run in ``run_dir`` trained, when its ``run_info.json`` says it completed and trained at
    least ``config.max_steps`` (with ``max_steps`` unset, the same ``num_train_epochs``); else ``None``."""
    path = run_dir / RUN_INFO_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if info.get("status") != "completed":
        return None
    recorded = info.get("config", {})
    steps = info.get("global_step", recorded.get("max_steps"))
    if config.max_steps > 0:
        return int(steps) if isinstance(steps, int) and steps >= config.max_steps else None
    same_length = recorded.get("max_steps", -1) <= 0 and recorded.get("num_train_epochs") == config.num_train_epochs
    return int(steps) if same_length and isinstance(steps, int) else None


def clear_run_dir(run_dir: Path) -> None:
    """Delete what a run wrote in ``run_dir`` that a fresh run would resume from or append to: its checkpoints,
    ``trajectory.jsonl`` and ``run_info.json`` (``--overwrite``)."""
    for checkpoint in run_dir.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    for name in (TRAJECTORY_FILE, RUN_INFO_FILE):
        (run_dir / name).unlink(missing_ok=True)
    log.warning("--overwrite: cleared %s (checkpoints, %s, %s)", run_dir, TRAJECTORY_FILE, RUN_INFO_FILE)
