"""Helpers of the ktos workflow: config checks at parse time, run names, targets, rule inputs.

Nothing here does work: these functions only name files and render `ktos` flags.
"""

import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from ktos.runnames import lr_tag, run_name
from ktos.sources import looks_like_path

#: Data source that makes the workflow write the embedded synthetic task (`ktos synth-data`).
SYNTHETIC = "synthetic"
#: Origins of a trajectory table that figures are drawn from: this workflow's runs, or the
#: committed reference table (config figures.table).
ORIGINS = ("study", "reference")


def check_source(key, source):
    """Stop at parse time when config `key` names a local path that does not exist.

    A string that may be a hub id (org/name, not on disk) only warns: it must be in the local
    Hugging Face cache, since jobs run offline.
    """
    if Path(source).expanduser().exists():
        return
    if looks_like_path(source):
        raise WorkflowError(
            f"config key {key}: {source!r} does not exist (no such file or directory). "
            "Point it at a local dataset file or directory, or a cached hub id (org/name)."
        )
    logger.warning(
        f"config key {key}: {source!r} is not a local path; it is read as a Hugging Face hub id "
        "and must already be in the local cache (jobs run offline)."
    )


def is_synthetic():
    """Whether the workflow writes and trains on the embedded synthetic task."""
    return config["data"]["source"] == SYNTHETIC


def check_config(config):
    """Cross-key checks that the JSON schema cannot express; each error names its key."""
    if not is_synthetic():
        check_source("data.source", config["data"]["source"])
    model = config["model"]["name_or_path"]
    if model is None and not is_synthetic():
        raise WorkflowError(
            "config key model.name_or_path: null (pretrain the tiny base model) needs "
            f"data.source: {SYNTHETIC}; set it to a hub id or local model directory."
        )
    if model is not None:
        check_source("model.name_or_path", model)
    synthetic = config["synthetic"]
    if is_synthetic() and synthetic["desirable"] >= synthetic["rows"]:
        raise WorkflowError(
            "config key synthetic.desirable must be below synthetic.rows "
            "(KTO needs undesirable rows too)."
        )
    tags = {lr_tag(lr) for lr in config["learning_rates"]}
    if lr_tag(config["default_lr"]) not in tags:
        raise WorkflowError(
            f"config key default_lr: {config['default_lr']} is not one of learning_rates "
            f"({', '.join(sorted(tags))})."
        )


check_config(config)


def input_dir(key):
    """A params function: the directory holding input file `key` (a dataset dir, a run dir)."""
    return lambda wildcards, input: Path(input[key]).parent


def output_dir(key):
    """A params function: the directory holding output file `key`."""
    return lambda wildcards, output: Path(output[key]).parent


def maybe_temp(path):
    """Model weights are temp() (deleted once no job needs them) unless config keep_models."""
    return path if config["keep_models"] else temp(path)


def run_dirs():
    """All run directories of the study: method x learning rate x seed (names: ktos.runnames)."""
    return [
        f"results/runs/{run_name(method, lr, seed)}"
        for method in config["methods"]
        for lr in config["learning_rates"]
        for seed in config["seeds"]
    ]


def run_files(name):
    """One file (trajectory.jsonl or run_info.json) of every run directory."""
    return [f"{run_dir}/{name}" for run_dir in run_dirs()]


def figure_table(wildcards):
    """The trajectory table figures are drawn from: this study's, or config figures.table."""
    if wildcards.origin == "study":
        return "results/study/trajectories.csv"
    return config["figures"]["table"]


def prepare_input(wildcards):
    """Input of `ktos prepare`: the synthetic data, or the configured source when it is on disk."""
    if is_synthetic():
        return {"source": "results/data/synthetic/data.jsonl"}
    source = config["data"]["source"]
    return {"source": source} if Path(source).expanduser().exists() else {}


def prepare_source(wildcards, input):
    """The --input of `ktos prepare`: a local file/directory, or a hub id."""
    return input.get("source", config["data"]["source"])


def base_model():
    """The model every run starts from: the pretrained tiny base or the configured model."""
    if config["model"]["name_or_path"] is None:
        return "results/models/base"
    return config["model"]["name_or_path"]


def train_input(wildcards):
    """Inputs of one training run; the base model is an input only when it is on disk.

    TRL 1.5.1's KTOTrainer reads the training set in file order (SequentialSampler), so the run's
    seed reaches the batch order through its own balanced (shuffled) copy of the training set.
    """
    inputs = {
        "train": f"results/data/balanced/seed{wildcards.seed}/data.jsonl",
        "balance_manifest": f"results/data/balanced/seed{wildcards.seed}/manifest.json",
        "eval": "results/data/split/eval/data.jsonl",
    }
    model = base_model()
    if config["model"]["name_or_path"] is None or Path(model).expanduser().exists():
        inputs["model"] = model
    if is_synthetic():
        inputs["heldout"] = "results/data/synthetic/heldout.jsonl"
    return inputs


def cli_flags(mapping):
    """Render {key: value} as `--key value` flags (booleans as true/false, None left out), quoted."""
    flags = []
    for key, value in mapping.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        flags.append(f"--{key} {shlex.quote(str(value))}")
    return " ".join(flags)


def use_kto_s(wildcards):
    """`--use_kto_s` value of a run: true for method kto_s, false for kto."""
    return str(wildcards.method == "kto_s").lower()


def train_optional_flags(wildcards, input):
    """`ktos train` flags that depend on the config: heldout set, remote code, extra fields."""
    flags = {}
    if "heldout" in input.keys():
        flags["heldout"] = input.heldout
    if config["model"]["trust_remote_code"]:
        flags["trust_remote_code"] = True
    flags.update(config["train"]["extra_args"])
    return cli_flags(flags)


def train_resources():
    """Scheduler resources of a training job: gpu (and gpu_model when GPUs are requested)."""
    res = config["resources"]
    resources = {"gpu": res["gpu"], "mem_mb": res["mem_mb"], "runtime": res["runtime"]}
    if res["gpu"] > 0 and res["gpu_model"]:
        resources["gpu_model"] = res["gpu_model"]
    return resources


TRAIN_RESOURCES = train_resources()
