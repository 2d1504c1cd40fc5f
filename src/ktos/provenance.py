"""Provenance: checksums, package versions, git revision and the run's ``run_info.json``."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Packages whose versions every run records.
TRACKED_PACKAGES = ("ktos", "torch", "trl", "transformers", "datasets", "accelerate", "tokenizers", "snakemake")


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the tracked packages and Python (``None`` when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(path: str | Path = Path(__file__).resolve().parent) -> str | None:
    """The commit hash of the git checkout holding ``path`` (default: this package's source), with
    ``+dirty`` when tracked files have changes, or ``None`` outside a checkout."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON atomically (write to a temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path


def update_json(path: str | Path, **changes: Any) -> dict[str, Any]:
    """Read a JSON object from ``path`` (empty if absent), apply ``changes`` and write it back."""
    path = Path(path)
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload.update(changes)
    write_json(path, payload)
    return payload
