"""Provenance: checksums, package versions, ktos's own revision, the machine and the run's ``run_info.json``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
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


#: The weights file of a model saved by ``save_pretrained`` (unsharded), whose SHA-256 names those weights.
WEIGHTS_FILE = "model.safetensors"
#: Beside weights stored in shards: the SHA-256 the unsharded :data:`WEIGHTS_FILE` of the same tensors has.
UNSHARDED_SHA256_FILE = "weights.sha256"


def weights_sha256(model_dir: str | Path) -> str | None:
    """The SHA-256 of ``model_dir``'s :data:`WEIGHTS_FILE`; for weights stored in shards, the one recorded in
    :data:`UNSHARDED_SHA256_FILE` (``ktos.toy.bases.shard_base`` writes it, and a test saves the shards' tensors
    unsharded again to check it); ``None`` otherwise (a hub id, ``.bin`` weights)."""
    model_dir = Path(model_dir).expanduser()
    if (model_dir / WEIGHTS_FILE).is_file():
        return sha256_file(model_dir / WEIGHTS_FILE)
    recorded = model_dir / UNSHARDED_SHA256_FILE
    return recorded.read_text().strip() if recorded.is_file() else None


def base_model_record(name_or_path: str) -> dict[str, str | None]:
    """What a run started from: ``name`` (a local directory's name, else the hub id), ``name_or_path`` and
    ``sha256`` (:func:`weights_sha256`; ``None`` for a hub id or other weight files)."""
    local = Path(name_or_path).expanduser().is_dir()
    return {
        "name": Path(name_or_path).name if local else name_or_path,
        "name_or_path": name_or_path,
        "sha256": weights_sha256(name_or_path) if local else None,
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions of the tracked packages and Python (``None`` when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


#: The directory of the ktos package's source.
PACKAGE_DIR = Path(__file__).resolve().parent


def _git(path: Path, *args: str) -> str:
    """stdout of ``git args`` run in ``path`` (raises ``OSError``/``SubprocessError`` when git fails)."""
    return subprocess.run(
        ["git", *args], cwd=path, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def git_revision(path: str | Path = PACKAGE_DIR) -> str | None:
    """The commit hash of the git checkout in which the directory ``path`` (default: this package's source) holds
    tracked files, with ``+dirty`` when tracked files have changes; ``None`` when it holds none (not a checkout,
    or an installed copy inside someone else's repository, where the files are untracked or ignored)."""
    try:
        if not _git(Path(path), "ls-files", "--", "."):
            return None
        rev = _git(Path(path), "rev-parse", "HEAD")
        dirty = _git(Path(path), "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def ktos_revision(path: str | Path = PACKAGE_DIR) -> str:
    """The ktos package's own revision: :func:`git_revision` of its source, else ``"ktos==VERSION"`` from the
    installed package's metadata (``"ktos==unknown"`` when there is none)."""
    revision = git_revision(path)
    if revision is not None:
        return revision
    try:
        return f"ktos=={metadata.version('ktos')}"
    except metadata.PackageNotFoundError:
        return "ktos==unknown"


def precision(args: Any) -> str:
    """The training arithmetic of a ``TrainingArguments``: ``"bf16"`` or ``"fp16"`` (mixed precision), else
    ``"tf32"`` when float32 matrix products on CUDA may use TF32, else ``"fp32"``."""
    import torch

    if getattr(args, "bf16", False):
        return "bf16"
    if getattr(args, "fp16", False):
        return "fp16"
    on_cuda = getattr(args.device, "type", None) == "cuda"
    return "tf32" if on_cuda and torch.get_float32_matmul_precision() != "highest" else "fp32"


def machine_info(args: Any, world_size: int, model: Any = None) -> dict[str, Any]:
    """What a run ran on: ``device`` (``cuda``, ``mps``, ``cpu``, ...) of ``args`` (``TrainingArguments``),
    ``device_name`` (the GPU's name, or the CPU architecture), ``device_count`` (GPUs visible, or logical CPU
    cores), ``world_size`` (processes), ``precision`` (:func:`precision`) and the model's ``weights_dtype``."""
    import torch

    device = args.device
    if device.type == "cuda":
        name, count = torch.cuda.get_device_name(device), torch.cuda.device_count()
    elif device.type == "mps":
        name, count = "Apple MPS", 1
    else:
        name, count = platform.machine() or "unknown", os.cpu_count() or 1
    dtype = getattr(model, "dtype", None)
    if dtype is None and model is not None:
        dtype = next((p.dtype for p in model.parameters()), None)
    return {
        "device": device.type,
        "device_name": name,
        "device_count": count,
        "world_size": world_size,
        "precision": precision(args),
        "weights_dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
    }


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
