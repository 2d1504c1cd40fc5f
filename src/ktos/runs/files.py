"""A run directory's files: their names, the measurements logged at their steps only, and the per-step trajectory
(``trajectory.jsonl``, one JSON object per optimizer step, appended by :class:`ktos.runs.trajectory.TrajectoryCallback`;
``run_info.json`` is written by :func:`ktos.runs.run.train`). Standard library only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Files of a run directory.
TRAJECTORY_FILE = "trajectory.jsonl"
RUN_INFO_FILE = "run_info.json"
#: Measurements logged at their steps only (:class:`ktos.probe.ProbeCallback`), copied when present:
#: the probe KL (nats per sequence), its standard error, the probe KL per token (nats per completion
#: token), the policy KL on the policy's own samples and its standard error (:mod:`ktos.policy_kl`, nats per
#: sequence; NaN where not measured) and the task quality (a fraction; ``_val`` and ``_test``: the held-out items'
#: two halves; ``_logprob``: the correct answer's mean log-probability, nats).
MEASURED_KEYS = (
    "probe_kl",
    "probe_kl_se",
    "probe_kl_per_token",
    "policy_kl",
    "policy_kl_se",
    "step_quality",
    "step_quality_val",
    "step_quality_test",
    "step_quality_logprob",
)


def read_trajectory(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``trajectory.jsonl``, one JSON object per line (empty when the file is absent).

    A truncated last line (a run still writing, or killed mid-write) is skipped with a warning; a
    bad line anywhere else raises ``ValueError``.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
            log.warning("%s: skipping an incomplete last line (run still writing?)", path)
    return records
