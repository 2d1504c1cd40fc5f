"""One training run: load model and data, train KTO or KTO-S, write the run directory.

A run directory is TRL's ``output_dir``: the final model and tokenizer (``--save_model``, loadable with
``from_pretrained(output_dir)`` as after ``trl kto``), TRL's checkpoints (as ``save_strategy`` and
``save_total_limit`` say) and model card, and ktos's ``trajectory.jsonl`` (one row per optimizer step, see
:class:`~ktos.runs.trajectory.TrajectoryCallback`) and ``run_info.json`` (config, seed, versions, ktos's
revision, the machine, status, task quality). A run that finds a checkpoint in its directory resumes from the
last one; a directory whose ``run_info.json`` says it completed ``max_steps`` is left alone (``--overwrite true``
trains it afresh).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset
from trl import ModelConfig, get_peft_config, get_quantization_config

from .. import compat
from ..config import KTOSConfig, check_class_weight
from ..data import DataValidationError, load_feedback
from ..models import load_model_and_tokenizer
from ..probe import ProbeCallback
from ..progress import use_step_bar
from ..provenance import (
    base_model_record,
    git_revision,
    ktos_revision,
    machine_info,
    package_versions,
    update_json,
    write_json,
)
from ..trainer import KTOSTrainer
from .files import RUN_INFO_FILE
from .quality import STEP_METRICS, TaskEval, base_task_accuracy, quality_measure
from .resume import clear_run_dir, finished_steps, last_complete_checkpoint
from .trajectory import TrajectoryCallback

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
        default=True,
        metadata={"help": "Save the trained model and tokenizer to output_dir, as trl kto does (keep out of git)."},
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
    allow_divergence: bool = field(
        default=False,
        metadata={
            "help": "Exit 0 when a run diverges (a non-finite loss or kl; recorded in run_info.json) instead of 3: "
            "the study's workflow records divergence as an outcome."
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Train afresh in an output_dir that holds a finished run or checkpoints (deleting its checkpoints "
            "and trajectory); without it a finished run is left alone and a checkpoint resumes."
        },
    )


@dataclass
class DataArguments:
    """Where the data lives: ``--train_data`` (a dataset dir written by `ktos prepare/split/balance`, or any source
    `ktos prepare` reads) or TRL's dataset arguments (``--dataset_name`` and its splits), one of the two."""

    train_data: str | None = field(
        default=None,
        metadata={"help": "Training data: a dataset dir, or any format `ktos prepare` reads (or give --dataset_name)."},
    )
    eval_data: str | None = field(
        default=None,
        metadata={
            "help": "Held-out data for the KL probe, preference accuracy and evaluation (--eval_strategy) (optional)."
        },
    )
    heldout: str | None = field(
        default=None,
        metadata={"help": "Synthetic held-out prompts with answers (heldout.jsonl): task accuracy is measured."},
    )
    weights_from: str | None = field(
        default=None,
        metadata={"help": "A balance manifest.json whose desirable/undesirable weights override the config's."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "TRL's dataset argument, instead of --train_data: a local path or hub id whose "
            "--dataset_train_split trains and whose --dataset_test_split is the eval set (unless --eval_data) "
            "when --eval_strategy is not 'no'."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration of the --dataset_name hub dataset (load_dataset's `name`)."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split of --dataset_name that trains."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split of --dataset_name that evaluates."})

    def __post_init__(self) -> None:
        if (self.train_data is None) == (self.dataset_name is None):
            raise ValueError("give the training data with one of --train_data and --dataset_name")


def _apply_balance_weights(config: KTOSConfig, manifest_path: str) -> None:
    manifest = json.loads(Path(manifest_path).read_text())
    config.desirable_weight = float(manifest["desirable_weight"])
    config.undesirable_weight = float(manifest["undesirable_weight"])
    check_class_weight(f"{manifest_path}: desirable_weight", config.desirable_weight)
    check_class_weight(f"{manifest_path}: undesirable_weight", config.undesirable_weight)
    log.info(
        "class weights from %s (%s strategy): desirable %.4g, undesirable %.4g",
        manifest_path,
        manifest.get("strategy", "?"),
        config.desirable_weight,
        config.undesirable_weight,
    )
    balanced_for = manifest.get("batch_size")
    if balanced_for is not None and balanced_for != config.per_device_train_batch_size:
        log.warning(
            "the data was balanced for batches of %d but per_device_train_batch_size is %d: "
            "batches may hold one label only",
            balanced_for,
            config.per_device_train_batch_size,
        )


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


def load_data(data_args: DataArguments, config: KTOSConfig) -> tuple[Dataset, Dataset | None]:
    """The training set and the eval set (``None`` without one): ``--train_data`` and ``--eval_data``, or
    ``--dataset_name``'s train split and, when evaluating (``eval_strategy`` not ``"no"``) without
    ``--eval_data``, its test split. Raises ``ValueError`` when evaluation has no eval set."""
    name, subset = data_args.dataset_name, data_args.dataset_config
    if name is None:
        train_dataset = load_feedback(str(data_args.train_data))
    else:
        train_dataset = load_feedback(name, split=data_args.dataset_train_split, config=subset)
    evaluating = config.eval_strategy != "no"
    if data_args.eval_data:
        return train_dataset, load_feedback(data_args.eval_data)
    if not evaluating:
        return train_dataset, None
    if name is None:
        raise ValueError(f"--eval_strategy {config.eval_strategy} needs an eval set: --eval_data or --dataset_name")
    if Path(name).expanduser().is_file():
        raise DataValidationError(
            f"{name}: a single file holds no {data_args.dataset_test_split!r} split: use --eval_data"
        )
    return train_dataset, load_feedback(name, split=data_args.dataset_test_split, config=subset)


def _check_model_args(model_config: ModelConfig) -> None:
    """Raise ``ValueError`` for model options that cannot train."""
    if not model_config.model_name_or_path:
        raise ValueError("--model_name_or_path is required")
    if (model_config.load_in_4bit or model_config.load_in_8bit) and not model_config.use_peft:
        raise ValueError("--load_in_4bit/--load_in_8bit train LoRA adapters only: add --use_peft")


def run_info(
    model_config: ModelConfig,
    run_args: RunArguments,
    data_args: DataArguments,
    config: KTOSConfig,
    *,
    train_rows: int,
    resume: str | None,
    model: Any = None,
) -> dict[str, Any]:
    """The run's ``run_info.json`` at its start (status ``running``): what was asked, the versions, ktos's own
    revision and the machine (:func:`ktos.provenance.machine_info`); a resumed run keeps its base quality."""
    info_path = Path(str(config.output_dir)) / RUN_INFO_FILE
    earlier = json.loads(info_path.read_text()) if resume and info_path.exists() else {}
    processes = PartialState().num_processes
    return {
        "regime": run_args.regime,
        "method": config.method,
        "loss_type": config.loss_type,
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
        "base": base_model_record(str(model_config.model_name_or_path)),
        "run": asdict(run_args),
        "data": asdict(data_args),
        "config": config.to_dict(),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "ktos_revision": ktos_revision(),
        "machine": machine_info(config, processes, model),
        "train_rows": train_rows,
        "num_processes": processes,
        "elapsed_s": None,
    }


def step_quality(
    measure: Callable[[], dict[str, Any]], trainer: KTOSTrainer, correct: dict[str, str]
) -> Callable[[], dict[str, float]]:
    """``measure`` (a quality measure) as step metrics (:data:`~ktos.runs.quality.STEP_METRICS`). When it reports
    each item's outcome (``correct``), that string is also kept in ``correct`` under the step number
    (``run_info.json``'s ``step_quality_correct`` after training)."""

    def metrics() -> dict[str, float]:
        quality = measure()
        out = {name: quality[key] for key, name in STEP_METRICS.items() if key in quality}
        if "correct" in quality:
            correct[str(trainer.state.global_step)] = quality["correct"]
        return out

    return metrics


def attach_callbacks(
    trainer: KTOSTrainer,
    run_args: RunArguments,
    data_args: DataArguments,
    eval_dataset: Dataset | None,
    resume: str | None,
    correct: dict[str, str],
    task: TaskEval | None = None,
) -> tuple[TrajectoryCallback, Callable[[], dict[str, Any]] | None]:
    """Register step quality (measured by the trainer's :class:`~ktos.probe.ProbeCallback`, or by one without a probe
    when the trainer has none, and logged through the trainer) and the trajectory writer, after the trainer's own
    update norm and KL probe; step quality keeps each item's outcome in ``correct``. Returns the writer and the
    run's quality measure."""
    measure = quality_measure(trainer, data_args.heldout, eval_dataset, task)
    trajectory = TrajectoryCallback(str(trainer.args.output_dir), resume_from=resume)
    if run_args.quality_steps and measure:
        extra = (run_args.quality_steps, step_quality(measure, trainer, correct))
        probes = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ProbeCallback)]
        if probes:  # one ProbeCallback per trainer (transformers warns about a second of a class)
            probes[0].add_extra(extra)
        else:
            trainer.add_callback(ProbeCallback(trainer, None, extra=extra))
    trainer.add_callback(trajectory)
    return trajectory, measure


def _finish(
    trainer: KTOSTrainer,
    run_args: RunArguments,
    diverged: bool,
    measure: Callable[[], dict[str, Any]] | None,
    changes: dict[str, Any],
) -> str:
    """After training: record the status (returned), final quality and ``changes`` in ``run_info.json`` and save the
    model and tokenizer in ``output_dir``."""
    run_dir = Path(str(trainer.args.output_dir))
    main_process = PartialState().is_main_process
    status = "diverged" if diverged else "completed"
    quality = None if diverged or measure is None else measure()
    if main_process:
        update_json(
            run_dir / RUN_INFO_FILE, status=status, quality=quality, global_step=trainer.state.global_step, **changes
        )
    if run_args.save_model:
        trainer.save_model(str(run_dir))
    trainer.accelerator.wait_for_everyone()
    log.info(
        "%s run %s in %ss: %d steps, quality %s",
        trainer.args.loss_type,
        status,
        changes.get("elapsed_s"),
        trainer.state.global_step,
        quality,
    )
    return status


def train(
    model_config: ModelConfig,
    run_args: RunArguments,
    data_args: DataArguments,
    config: KTOSConfig,
    task: TaskEval | None = None,
) -> str:
    """Train one run into ``config.output_dir`` and return its status: ``completed``, ``diverged``, or ``finished``
    when the directory already held a run that completed ``max_steps`` (left alone, unless ``--overwrite``).
    ``task`` scores ``--heldout`` items (:class:`~ktos.runs.quality.TaskEval`; ``ktos train`` hands in the toy's).

    Writes ``run_info.json`` first (status ``running``), then trains with the trajectory callback
    and the KL probe (when there is an eval set and ``kl_probe_size > 0``), evaluating on the eval set when
    ``eval_strategy`` asks, then records the final status (``completed`` or ``diverged``), wall time and
    task quality (base model's and final).
    """
    run_dir = Path(str(config.output_dir))
    if run_args.overwrite:
        clear_run_dir(run_dir)
    elif (done := finished_steps(run_dir, config)) is not None:
        log.warning(
            "%s: finished (%d steps, status completed in %s); left alone (--overwrite true trains it afresh)",
            run_dir,
            done,
            RUN_INFO_FILE,
        )
        return "finished"
    run_dir.mkdir(parents=True, exist_ok=True)
    if data_args.weights_from:
        _apply_balance_weights(config, data_args.weights_from)
    if data_args.eval_data and config.kl_probe_dataset is None:
        config.kl_probe_dataset = data_args.eval_data  # the trainer's probe, also when not evaluating
    train_dataset, eval_dataset = load_data(data_args, config)
    _check_model_args(model_config)
    model, tokenizer = _load(str(model_config.model_name_or_path), model_config, config)
    ref_model = (
        _load(run_args.ref_model_name_or_path, model_config, config)[0] if run_args.ref_model_name_or_path else None
    )
    checkpoint = last_complete_checkpoint(run_dir)
    resume = str(checkpoint) if checkpoint else None
    main_process = PartialState().is_main_process  # with several processes, the first writes the run dir
    if main_process:
        info = run_info(
            model_config, run_args, data_args, config, train_rows=len(train_dataset), resume=resume, model=model
        )
        write_json(run_dir / RUN_INFO_FILE, info)
    trainer = KTOSTrainer(
        model=model,
        ref_model=ref_model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if config.eval_strategy != "no" else None,  # else TRL would tokenise it for nothing
        processing_class=tokenizer,
        peft_config=get_peft_config(model_config),
    )
    use_step_bar(trainer)  # the one bar: step, loss, kl, probe KL
    correct: dict[str, str] = {}  # step -> each held-out item's outcome ("1" right, "0" wrong)
    trajectory, measure = attach_callbacks(trainer, run_args, data_args, eval_dataset, resume, correct, task)
    changes: dict[str, Any] = {"step_quality_correct": correct} if run_args.quality_steps else {}
    if data_args.heldout and not resume and main_process:
        assert task is not None  # quality_measure refused --heldout without one
        changes["base_quality"] = base_task_accuracy(str(model_config.model_name_or_path), data_args.heldout, task)
    started = time.monotonic()
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    changes["elapsed_s"] = round(time.monotonic() - started, 2)
    return _finish(trainer, run_args, trajectory.diverged_at is not None, measure, changes)
