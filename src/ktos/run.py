"""One training run: load model and data, train KTO or KTO-S, write the run directory.

A run directory holds ``trajectory.jsonl`` (one row per optimizer step, see
:class:`~ktos.trainer.TrajectoryCallback`), ``run_info.json`` (config, seed, versions, git revision,
status, task quality) and TRL's checkpoints while training. A run that finds a checkpoint in its
directory resumes from the last one.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset
from trl import ModelConfig, get_peft_config, get_quantization_config

from . import compat
from .data import load_feedback
from .models import load_model_and_tokenizer
from .probe import KLProbe
from .provenance import git_revision, package_versions, update_json, write_json
from .quality import PreferenceAccuracy, load_items, task_accuracy
from .rundir import RUN_INFO_FILE
from .trainer import KTOSConfig, KTOSTrainer, TrajectoryCallback
from .update_norm import UpdateNormCallback

log = logging.getLogger(__name__)


@dataclass
class RunArguments:
    """What the run keeps and compares with (the model itself is TRL's ``ModelConfig``: ``--model_name_or_path``,
    ``--dtype``, ``--model_revision`` and TRL's other model options)."""

    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Reference model (hub id or local directory); default: a frozen copy of the model."},
    )
    save_model: bool = field(
        default=True, metadata={"help": "Save the trained model to output_dir/model (weights: keep out of git)."}
    )
    keep_checkpoints: bool = field(
        default=False,
        metadata={"help": "Keep output_dir/checkpoint-* after a run completes (they exist to resume a killed run)."},
    )
    regime: str = field(
        default="main",
        metadata={"help": "Name of the training regime this run belongs to (recorded in run_info.json)."},
    )
    quality_steps: list[int] = field(
        default_factory=list,
        metadata={"help": "Optimizer steps at which task accuracy is also measured during training (needs --heldout)."},
    )
    run_dirs: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Train several runs in this process, one per directory, each named {method}_lr{lr}_seed{seed}: "
            "the name sets use_kto_s, learning_rate and seed; {seed} in --train_data and --weights_from is "
            "replaced by the run's seed. Instead of --output_dir."
        },
    )


@dataclass
class DataArguments:
    """Where the prepared data lives (dataset dirs written by `ktos prepare/split/balance`)."""

    train_data: str = field(metadata={"help": "Training data: a dataset dir, or any format `ktos prepare` reads."})
    eval_data: str | None = field(
        default=None, metadata={"help": "Held-out data for the KL probe and preference accuracy (optional)."}
    )
    heldout: str | None = field(
        default=None,
        metadata={"help": "Synthetic held-out prompts with answers (heldout.jsonl): task accuracy is measured."},
    )
    weights_from: str | None = field(
        default=None,
        metadata={"help": "A balance manifest.json whose desirable/undesirable weights override the config's."},
    )


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The highest-step ``checkpoint-N`` in ``run_dir`` that was fully written (has ``trainer_state.json``)."""
    done = [p for p in run_dir.glob("checkpoint-*") if p.name[11:].isdigit() and (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name[11:]), default=None)


def _apply_balance_weights(config: KTOSConfig, manifest_path: str) -> None:
    manifest = json.loads(Path(manifest_path).read_text())
    config.desirable_weight = float(manifest["desirable_weight"])
    config.undesirable_weight = float(manifest["undesirable_weight"])
    log.info(
        "class weights from %s (%s strategy): desirable %.4g, undesirable %.4g",
        manifest_path, manifest.get("strategy", "?"), config.desirable_weight, config.undesirable_weight,
    )
    balanced_for = manifest.get("batch_size")
    if balanced_for is not None and balanced_for != config.per_device_train_batch_size:
        log.warning(
            "the data was balanced for batches of %d but per_device_train_batch_size is %d: "
            "batches may hold one label only", balanced_for, config.per_device_train_batch_size,
        )


def quality_measure(
    trainer: KTOSTrainer, data_args: DataArguments, eval_dataset: Dataset | None
) -> Callable[[], dict[str, Any]] | None:
    """What measures the run's quality, set up before training: task accuracy on the held-out items when
    given, else preference accuracy on the eval split (its reference log-probs taken now), else nothing."""
    if data_args.heldout:
        items = load_items(data_args.heldout)
        return lambda: task_accuracy(trainer.model, trainer.processing_class, items)
    if eval_dataset is not None:
        return PreferenceAccuracy(trainer, eval_dataset).measure
    return None


@functools.cache
def base_task_accuracy(model_name_or_path: str, heldout: str) -> dict[str, Any]:
    """Task accuracy of the base model itself, measured once per process and (model, held-out set)."""
    model, tokenizer = load_model_and_tokenizer(model_name_or_path)
    return task_accuracy(model, tokenizer, load_items(heldout))


def _process_device_map() -> dict[str, int] | None:
    """Quantised weights load straight onto this process's GPU (None without one)."""
    return {"": PartialState().local_process_index} if torch.cuda.is_available() else None


def _load(name_or_path: str, model_config: ModelConfig, config: KTOSConfig) -> tuple[Any, Any]:
    """Load a model as TRL's ``ModelConfig`` asks: dtype, revision, remote code, attention implementation, and
    4- or 8-bit weights (bitsandbytes) when ``load_in_4bit``/``load_in_8bit``."""
    quantization = get_quantization_config(model_config)
    return load_model_and_tokenizer(
        name_or_path,
        trust_remote_code=compat.trust_remote_code(model_config, config),
        dtype=model_config.dtype,
        revision=model_config.model_revision,
        attn_implementation=model_config.attn_implementation,
        quantization_config=quantization,
        device_map=_process_device_map() if quantization is not None else None,
    )


def train(model_config: ModelConfig, run_args: RunArguments, data_args: DataArguments, config: KTOSConfig) -> Path:
    """Train one run into ``config.output_dir`` and return that directory.

    Writes ``run_info.json`` first (status ``running``), then trains with the trajectory callback
    and the KL probe (when ``eval_data`` is given and ``kl_probe_size > 0``), then records the final
    status (``completed`` or ``diverged``), wall time and task quality (base model's and final).
    """
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if data_args.weights_from:
        _apply_balance_weights(config, data_args.weights_from)
    train_dataset = load_feedback(data_args.train_data)
    eval_dataset = load_feedback(data_args.eval_data) if data_args.eval_data else None
    if not model_config.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    if (model_config.load_in_4bit or model_config.load_in_8bit) and not model_config.use_peft:
        raise ValueError("--load_in_4bit/--load_in_8bit train LoRA adapters only: add --use_peft")
    model, tokenizer = _load(model_config.model_name_or_path, model_config, config)
    ref_model = _load(run_args.ref_model_name_or_path, model_config, config)[0] if run_args.ref_model_name_or_path else None
    checkpoint = last_complete_checkpoint(run_dir)
    resume = str(checkpoint) if checkpoint else None
    info_path = run_dir / RUN_INFO_FILE
    earlier = json.loads(info_path.read_text()) if resume and info_path.exists() else {}
    state = PartialState()
    main_process = state.is_main_process  # with several processes, the first writes the run dir
    info = {
        "regime": run_args.regime,
        "method": config.method,
        "use_kto_s": config.use_kto_s,
        "beta": config.beta,
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "status": "running",
        "diverged_at_step": None,
        "quality": None,
        "base_quality": earlier.get("base_quality"),
        "resumed_from": resume,
        "model": asdict(model_config),
        "run": asdict(run_args),
        "data": asdict(data_args),
        "config": config.to_dict(),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "train_rows": len(train_dataset),
        "num_processes": state.num_processes,
        "elapsed_s": None,
    }
    if main_process:
        write_json(info_path, info)
    trainer = KTOSTrainer(
        model=model,
        ref_model=ref_model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_config),
    )
    probe = None
    if eval_dataset is not None and config.kl_probe_size > 0:
        probe = KLProbe(trainer, eval_dataset, config.kl_probe_size)
        log.info("KL probe: %d held-out mismatched pairs (%d tokens)", probe.n_pairs, probe.n_tokens)
    measure = quality_measure(trainer, data_args, eval_dataset)
    step_quality = (run_args.quality_steps, measure) if run_args.quality_steps and measure else None
    callback = TrajectoryCallback(
        run_dir, probe=probe, probe_steps=config.kl_probe_steps, step_quality=step_quality, resume_from=resume
    )
    trainer.add_callback(UpdateNormCallback())  # before the trajectory callback, which records its update_norm
    trainer.add_callback(callback)
    base_quality = None
    if data_args.heldout and not resume and main_process:
        base_quality = base_task_accuracy(model_config.model_name_or_path, data_args.heldout)
    started = time.monotonic()
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    elapsed = time.monotonic() - started
    status = "diverged" if callback.diverged_at is not None else "completed"
    quality = None if status == "diverged" or measure is None else measure()
    changes: dict[str, Any] = {"status": status, "quality": quality, "elapsed_s": round(elapsed, 2)}
    if base_quality is not None:
        changes["base_quality"] = base_quality
    if main_process:
        update_json(info_path, **changes)
    if run_args.save_model:
        trainer.save_model(str(run_dir / "model"))
    trainer.accelerator.wait_for_everyone()
    if status == "completed" and not run_args.keep_checkpoints and main_process:
        for checkpoint in run_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
    log.info(
        "%s run %s in %.1fs: %d steps, quality %s",
        config.method, status, elapsed, trainer.state.global_step, quality,
    )
    return run_dir
