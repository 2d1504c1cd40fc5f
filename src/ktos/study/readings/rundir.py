r"""The run-directory format: file names, one trajectory row per optimizer step, and the tidy table.

A run directory (named by :func:`ktos.runnames.run_name`) holds ``trajectory.jsonl`` (one JSON object
per optimizer step, appended as training goes by :class:`ktos.runs.trajectory.TrajectoryCallback`) and
``run_info.json`` (config, seed, versions, git revision, status, quality; written by
:func:`ktos.runs.run.train`). :func:`extract` reads run directories into one tidy table, one row per run
and step, with the columns :data:`COLUMNS`.

Units. ``kl`` is TRL's logged KL reference point ``z0``: the batch mean over mismatched prompt/completion
pairs of ``log pi_theta(y'|x) - log pi_ref(y'|x)`` summed over completion tokens, clamped at 0, in
sequence-level nats. ``probe_kl`` is the same quantity on a fixed held-out probe (sequence-level nats,
not clamped) and ``probe_kl_per_token`` that divided by the completion length (nats/token). ``rewards_*``
are TRL's logged batch means of ``beta * r`` (nats scaled by ``beta``).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from ...loss_types import KTO, KTO_S
from ...runnames import parse_run_name
from ...runs.files import MEASURED_KEYS, RUN_INFO_FILE, TRAJECTORY_FILE, read_trajectory

log = logging.getLogger(__name__)

#: Columns of the tidy trajectory table, in order: run-level fields (repeated on every row), then per step.
COLUMNS: tuple[str, ...] = (
    "regime",
    "base",
    "method",
    "lr",
    "beta",
    "seed",
    "max_steps",
    "step",
    "kl",
    *MEASURED_KEYS,
    "loss",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "learning_rate",
    "grad_norm",
    "update_norm",
    "elapsed_s",
    "status",
    "quality_metric",
    "quality",
    "quality_val",
    "quality_test",
    "quality_logprob",
    "base_quality",
    "base_quality_val",
    "base_quality_test",
    "base_quality_logprob",
    "params",
)
#: Columns that tables written before they existed lack (read as NaN).
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "base", "step_quality_val", "step_quality_test", "update_norm", "quality_val", "quality_test", "base_quality_val",
    "base_quality_test", "params", "policy_kl", "policy_kl_se", "step_quality_logprob", "quality_logprob",
    "base_quality_logprob",
)  # fmt: skip
#: Trajectory keys as logged by TRL -> table columns.
RENAME: dict[str, str] = {
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "rewards/margins": "rewards_margins",
}
#: Methods in display order, and how papers write them.
#: ``status`` of a run dir that has a trajectory but no ``run_info.json``.
NO_RUN_INFO = "no_run_info"
#: The columns that identify a run in the tidy table.
KEYS: tuple[str, ...] = ("regime", "base", "method", "lr", "seed")
#: Regime of a run whose run_info.json names none.
DEFAULT_REGIME = "main"


def _model_params(info: dict[str, Any]) -> float:
    """The trained model's parameter count: ``run_info["model_params"]`` when recorded, else the ``params`` of the
    ``pretrain_log.json`` beside the base model the run started from (the embedded default's sizes), else NaN."""
    if info.get("model_params") is not None:
        return float(info["model_params"])
    base = Path(str((info.get("model") or {}).get("model_name_or_path") or "")) / "pretrain_log.json"
    if base.is_file():
        return float(json.loads(base.read_text()).get("params", math.nan))
    return math.nan


def read_run(run_dir: str | Path) -> pd.DataFrame:
    """One run dir (``trajectory.jsonl`` + ``run_info.json``) -> rows of the tidy table.

    Run-level fields (regime, base: the name of the model it started from, method, lr =
    ``run_info["learning_rate"]``, beta, seed, max_steps, status,
    quality and the base model's quality) are repeated on every row. Without ``run_info.json`` the run
    is still read: status ``"no_run_info"``, regime :data:`DEFAULT_REGIME`, method, lr and seed from the
    directory's run name (an unrecognised name raises ``ValueError``).
    A diverged run keeps its rows up to ``diverged_at_step`` only. A step logged twice keeps its last line.
    """
    run_dir = Path(run_dir)
    traj = run_dir / TRAJECTORY_FILE
    if not traj.is_file():
        raise FileNotFoundError(f"{run_dir}: no {TRAJECTORY_FILE}")
    info_path = run_dir / RUN_INFO_FILE
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        quality = info.get("quality") or {}
        base = info.get("base_quality") or {}
        run = {
            "regime": info.get("regime") or DEFAULT_REGIME,
            "base": (info.get("base") or {}).get("name"),
            "method": info.get("method") or (KTO_S if info.get("use_kto_s") else KTO),
            "lr": info.get("learning_rate", math.nan),
            "beta": info.get("beta", math.nan),
            "seed": info.get("seed", math.nan),
            "max_steps": (info.get("config") or {}).get("max_steps", math.nan),
            "status": info.get("status", "running"),
            "quality_metric": quality.get("metric"),
            "quality": quality.get("value", math.nan),
            "quality_val": quality.get("value_val", math.nan),
            "quality_test": quality.get("value_test", math.nan),
            "quality_logprob": quality.get("logprob", math.nan),
            "base_quality": base.get("value", math.nan),
            "base_quality_val": base.get("value_val", math.nan),
            "base_quality_test": base.get("value_test", math.nan),
            "base_quality_logprob": base.get("logprob", math.nan),
            "params": _model_params(info),
        }
        diverged_at = info.get("diverged_at_step")
    else:
        log.warning("%s: no run_info.json; method, lr and seed read from its name", run_dir)
        run = {"regime": DEFAULT_REGIME, "base": None, **parse_run_name(run_dir.name)._asdict(), "status": NO_RUN_INFO}
        run.update(quality_metric=None, quality=math.nan, quality_val=math.nan, quality_test=math.nan,
                   quality_logprob=math.nan)  # fmt: skip
        diverged_at = None

    rows = pd.DataFrame(read_trajectory(traj)).rename(columns=RENAME)
    if rows.empty or "step" not in rows:
        rows = pd.DataFrame({"step": pd.Series(dtype=int)})
    rows = rows.drop_duplicates("step", keep="last").sort_values("step")
    if run["status"] == "diverged" and diverged_at is not None:
        rows = rows[rows["step"] <= diverged_at]
    for col, value in run.items():
        rows[col] = value
    for col in COLUMNS:
        if col not in rows:
            rows[col] = math.nan
    numeric = [c for c in COLUMNS if c not in ("regime", "base", "method", "status", "quality_metric")]
    rows[numeric] = rows[numeric].apply(pd.to_numeric, errors="coerce")
    return rows.loc[:, list(COLUMNS)].reset_index(drop=True)


def _expand_run_dirs(run_dirs: Iterable[str | Path]) -> list[Path]:
    """Run dirs as given; a dir without ``trajectory.jsonl`` stands for the run dirs below it."""
    out: list[Path] = []
    for d in map(Path, run_dirs):
        if (d / TRAJECTORY_FILE).is_file():
            out.append(d)
            continue
        found = sorted(p.parent for p in d.rglob(TRAJECTORY_FILE))
        if not found:
            raise FileNotFoundError(f"{d}: no trajectory.jsonl in it or below it")
        out.extend(found)
    return out


def extract(
    run_dirs: Iterable[str | Path], out_csv: str | Path, *, run_info_out: str | Path | None = None
) -> pd.DataFrame:
    """Read run dirs into the tidy table, sorted by regime, method, lr, seed, step, and write it to ``out_csv``
    (numbers to 6 significant digits; a ``.gz`` name compresses it). ``run_info_out`` also collects every
    run's ``run_info.json``, one per line (JSON Lines, ``.gz`` compresses).

    A dir holding no ``trajectory.jsonl`` is searched below for run dirs. Two runs with the same
    (regime, method, lr, seed) are an error. Logs the number of runs and rows and warns about diverged,
    unfinished and info-less runs.
    """
    dirs = _expand_run_dirs(run_dirs)
    frames: list[pd.DataFrame] = []
    seen: dict[tuple[Any, ...], Path] = {}
    n_div = 0
    for d in tqdm(dirs, desc="reading runs", unit="run", disable=len(dirs) < 20):
        rows = read_run(d)
        frames.append(rows)
        if rows.empty:
            log.warning("%s: empty trajectory", d)
            continue
        key = tuple(rows[k].iat[0] for k in KEYS)
        if key in seen:
            raise ValueError(
                f"{d} and {seen[key]} are both " + ", ".join(f"{k}={v}" for k, v in zip(KEYS, key, strict=True))
            )
        seen[key] = d
        status = rows["status"].iat[0]
        if status == "diverged":
            n_div += 1
            log.warning("%s (%s, base %s, %s, lr %g, seed %s) diverged at step %d", d, *key, rows["step"].max())
        elif status != "completed":
            log.warning("%s (%s, base %s, %s, lr %g, seed %s) has status %r: read as is", d, *key, status)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    df = df.sort_values([*KEYS, "step"], kind="mergesort", ignore_index=True)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    compression = {"method": "gzip", "mtime": 0} if out_csv.suffix == ".gz" else None  # mtime 0: same bytes
    df.to_csv(out_csv, index=False, float_format="%.6g", compression=compression)
    if run_info_out is not None:
        infos = [(d / RUN_INFO_FILE).read_text() for d in dirs if (d / RUN_INFO_FILE).is_file()]
        lines = "".join(json.dumps(json.loads(text), sort_keys=True) + "\n" for text in infos)
        run_info_out = Path(run_info_out)
        if run_info_out.suffix == ".gz":
            run_info_out.write_bytes(gzip.compress(lines.encode(), mtime=0))
        else:
            run_info_out.write_text(lines)
    log.info("extracted %d runs, %d rows -> %s (%d diverged)", len(seen), len(df), out_csv, n_div)
    return df


def read_table(table_csv: str | Path) -> pd.DataFrame:
    """Read a tidy trajectory table written by :func:`extract` (text columns kept as strings)."""
    df = pd.read_csv(table_csv, dtype={"regime": str, "base": str, "method": str, "status": str, "quality_metric": str})
    for col in OPTIONAL_COLUMNS:
        if col not in df:
            df[col] = float("nan")
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{table_csv}: missing columns {sorted(missing)}")
    return df


# ----------------------------------------------------------------------------------------------- per run
