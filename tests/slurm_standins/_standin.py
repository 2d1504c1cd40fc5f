"""Shared state of the SLURM stand-ins (sbatch, sacct, sacctmgr, scontrol, srun) used by tests.

The state directory is ``$KTOS_STANDIN_DIR`` (not ``SLURM_*``: the jobstep executor drops those
from a job step's environment).

Every call is logged as one JSON line ``{"tool": ..., "argv": [...]}`` to ``$KTOS_STANDIN_DIR/calls.jsonl``;
jobs are recorded as ``$KTOS_STANDIN_DIR/jobs/<id>.json`` with their name and state.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

#: The account the stand-ins report for the current user.
ACCOUNT = "ktos"


def state_dir() -> Path:
    """``$KTOS_STANDIN_DIR`` (created on first use)."""
    path = Path(os.environ["KTOS_STANDIN_DIR"])
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def log_call(tool: str, argv: list[str]) -> None:
    """Append this call to ``calls.jsonl`` (one line per call, under a lock)."""
    with (state_dir() / "calls.jsonl").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps({"tool": tool, "argv": argv}) + "\n")


def next_job_id() -> int:
    """A new job id, counting up from 1000 (under a lock)."""
    with (state_dir() / "counter").open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        job_id = int(fh.read() or 999) + 1
        fh.seek(0)
        fh.truncate()
        fh.write(str(job_id))
    return job_id


def write_job(job_id: int, **record: object) -> None:
    """Create or update ``jobs/<id>.json``."""
    path = state_dir() / "jobs" / f"{job_id}.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(record)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current))
    tmp.replace(path)


def jobs() -> list[dict]:
    """Every recorded job."""
    return [json.loads(p.read_text()) for p in sorted((state_dir() / "jobs").glob("*.json"))]
