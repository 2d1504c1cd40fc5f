"""Helpers of the ktos workflow: config checks at parse time, run names, targets, rule inputs.

Nothing here does work: these functions only name files and render `ktos` flags and settings.
"""

import hashlib
import json
import re
import shlex
from pathlib import Path

import yaml

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from ktos.sources import looks_like_path
from ktos.study.runnames import lr_tag, parse_run_name, run_name
from ktos.toy.bases import CHECKSUMS_FILE, base_name

#: The config's JSON schema, with each key's one default.
SCHEMA = yaml.safe_load(
    (Path(workflow.basedir) / "schemas/config.schema.yaml").read_text()
)
#: Data source that makes the workflow write the embedded synthetic task (`ktos synth-data`).
SYNTHETIC = "synthetic"
#: Origins of a trajectory table that figures are drawn from: this workflow's runs
#: (results/studies/<study>), or the committed reference copy (results/reference/<study>).
ORIGINS = ("studies", "reference")


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


def regime_names():
    """The configured regimes' names, in order."""
    return [regime["name"] for regime in config["regimes"]]


def regime_settings(regime):
    """A regime's entry of config regimes."""
    return next(r for r in config["regimes"] if r["name"] == regime)


def learning_rates(regime, method):
    """The learning rates `method` is trained at in `regime` (the regime's own, else the config's)."""
    rates = regime_settings(regime).get("learning_rates", config["learning_rates"])
    return rates if isinstance(rates, list) else rates.get(method, [])


def headline_regime():
    """The regime of Figures 2 and 3 and of the verdict."""
    return config["headline"]["regime"] or regime_names()[0]


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
        sized = [r["name"] for r in config["regimes"] if "model_size" in r]
        if sized:
            raise WorkflowError(
                f"config key regimes: {', '.join(sized)} set model_size, which sizes the pretrained base "
                "model: it needs model.name_or_path: null."
            )
    synthetic = config["synthetic"]
    if is_synthetic() and synthetic["desirable"] >= synthetic["rows"]:
        raise WorkflowError(
            "config key synthetic.desirable must be below synthetic.rows "
            "(KTO needs undesirable rows too)."
        )
    names = regime_names()
    if len(set(names)) != len(names):
        raise WorkflowError(f"config key regimes: names must be unique, got {names}")
    regime = headline_regime()
    if regime not in names:
        raise WorkflowError(
            f"config key headline.regime: {regime!r} is not one of regimes ({', '.join(names)})"
        )
    lr = lr_tag(config["headline"]["lr"])
    for method in config["methods"]:
        if lr not in {lr_tag(x) for x in learning_rates(regime, method)}:
            raise WorkflowError(
                f"config key headline.lr: {lr} is not a learning rate of {method} in regime {regime!r}"
            )


check_config(config)


def input_dir(key):
    """A params function: the directory holding input file `key` (a dataset dir, a run dir)."""
    return lambda wildcards, input: Path(input[key]).parent


def output_dir(key):
    """A params function: the directory holding output file `key`."""
    return lambda wildcards, output: Path(output[key]).parent


#: Settings that make the prepared, split and balanced data (the synthetic task's included).
DATA_KEYS = {
    "data": ("source", "split", "eval_fraction", "seed"),
    "synthetic": ("seed", "rows", "desirable", "heldout"),
    "balance": ("strategy",),
    "train": ("per_device_train_batch_size",),
}


def data_tag():
    """The data's directory name under results/data: "default" for the schema's defaults, else "d" and the first 8
    hex digits of the SHA-256 of the settings that differ, so that two configs whose data differ never share
    (and never overwrite) it, and two whose data agree do."""
    changed = {}
    for section, keys in DATA_KEYS.items():
        defaults = SCHEMA["properties"][section]["properties"]
        for key in keys:
            if config[section][key] != defaults[key].get("default"):
                changed[f"{section}.{key}"] = config[section][key]
    if not changed:
        return "default"
    return (
        "d"
        + hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
    )


DATA_TAG = data_tag()
DATA = f"results/data/{DATA_TAG}"

STUDY_DIR = f"results/studies/{config['study']}"
REFERENCE_DIR = f"results/reference/{config['study']}"


def run_dir(regime, base, method, lr, seed):
    """A run's directory: results/runs/<study>/<regime>/<base name>/<run name> (names: ktos.study.runnames); with
    a configured model (base None) results/runs/<study>/<regime>/<run name>."""
    parts = [
        config["study"],
        regime,
        *([base] if base else []),
        run_name(method, lr, seed),
    ]
    return "results/runs/" + "/".join(parts)


#: Settings of the synthetic data and the pretraining that make a base model, besides its size and seed.
RECIPE_KEYS = (
    "seed",
    "rows",
    "desirable",
    "heldout",
    "pretrain_steps",
    "pretrain_batch_size",
    "pretrain_max_seconds",
)


def base_recipe():
    """The recipe settings that differ from the schema's defaults, with which the committed bases were made
    (empty for the committed recipe): part of a base's name (ktos.toy.bases.base_name).
    """
    defaults = SCHEMA["properties"]["synthetic"]["properties"]
    synthetic = config["synthetic"]
    return {
        k: synthetic[k] for k in RECIPE_KEYS if synthetic[k] != defaults[k]["default"]
    }


def committed_bases_dir():
    """synthetic.committed_bases, a relative path read from the workflow's repository root."""
    path = Path(config["synthetic"]["committed_bases"]).expanduser()
    return path if path.is_absolute() else Path(workflow.basedir).parent / path


def regime_size(regime):
    """The size of the base model a regime trains (its model_size, else synthetic.size)."""
    return regime_settings(regime).get("model_size", config["synthetic"]["size"])


def bases(regime):
    """{base name: model} that a regime's runs start from, in synthetic.base_seeds' order: the committed base of
    each name when synthetic.bases is committed and there is one, else the base pretrained here
    (results/models/bases/<name>); with model.name_or_path set, that model alone (under the name None).
    """
    if config["model"]["name_or_path"] is not None:
        return {None: config["model"]["name_or_path"]}
    out = {}
    for seed in config["synthetic"]["base_seeds"]:
        name = base_name(regime_size(regime), seed, base_recipe())
        committed = committed_bases_dir() / name
        use_committed = (
            config["synthetic"]["bases"] == "committed"
            and (committed / CHECKSUMS_FILE).is_file()
        )
        out[name] = str(committed) if use_committed else f"results/models/bases/{name}"
    return out


def pretrained_bases():
    """{base name: (size, pretraining seed)} of every base this study pretrains (not committed)."""
    return {
        name: (regime_size(regime), seed)
        for regime in regime_names()
        for (name, path), seed in zip(
            bases(regime).items(), config["synthetic"]["base_seeds"]
        )
        if path.startswith("results/models/bases/")
    }


PRETRAINED_BASES = pretrained_bases() if config["model"]["name_or_path"] is None else {}


def reference_flag(wildcards):
    """`--reference DIR` when a committed base of this name exists: the rebuild is compared with it."""
    committed = committed_bases_dir() / wildcards.base
    return (
        f"--reference {shlex.quote(str(committed))}"
        if (committed / CHECKSUMS_FILE).is_file()
        else ""
    )


def train_jobs():
    """{job name: (regime, base model, [run dir, ...])}: the runs of each regime and base split evenly into jobs
    of at most resources.runs_per_job runs (one process each)."""
    size = config["resources"]["runs_per_job"]
    jobs = {}
    for regime in regime_names():
        for base, model in bases(regime).items():
            runs = [
                run_dir(regime, base, method, lr, seed)
                for seed in config["seeds"]
                for method in config["methods"]
                for lr in learning_rates(regime, method)
            ]
            n_jobs = -(-len(runs) // size)
            bounds = [
                round(i * len(runs) / n_jobs) for i in range(n_jobs + 1)
            ]  # contiguous: a seed's runs together
            prefix = f"{regime}_{base}" if base else regime
            for i in range(n_jobs):
                jobs[f"{prefix}_{i}"] = (regime, model, runs[bounds[i] : bounds[i + 1]])
    return jobs


TRAIN_JOBS = train_jobs()


def run_files(name):
    """One file (trajectory.jsonl or run_info.json) of every run directory of the study."""
    return [f"{d}/{name}" for *_, dirs in TRAIN_JOBS.values() for d in dirs]


def figure_table(wildcards):
    """The trajectory table figures are drawn from: this study's, or the committed reference copy."""
    if wildcards.origin == "studies":
        return f"{STUDY_DIR}/trajectories.csv.gz"
    return config["analysis"]["table"] or f"{REFERENCE_DIR}/trajectories.csv.gz"


def figure_run_info(wildcards):
    """The runs' records beside the figures' trajectory table (none beside a table given without them)."""
    if wildcards.origin == "studies":
        return f"{STUDY_DIR}/run_info.jsonl.gz"
    records = Path(figure_table(wildcards)).with_name("run_info.jsonl.gz")
    return str(records) if records.exists() else []


def run_info_flag(wildcards, input):
    """`--run-info` with the runs' records, when the rule has them."""
    return f"--run-info {input.run_info}" if input.run_info else ""


def prepare_input(wildcards):
    """Input of `ktos prepare`: the synthetic data, or the configured source when it is on disk."""
    if is_synthetic():
        return {"source": rules.synth_data.output.data}
    source = config["data"]["source"]
    return {"source": source} if Path(source).expanduser().exists() else {}


def prepare_source(wildcards, input):
    """The --input of `ktos prepare`: a local file/directory, or a hub id."""
    return input.get("source", config["data"]["source"])


def train_input(model, runs):
    """Inputs of a training job: each run's seed's balanced copy of the training set (the seed sets the
    batch order: the trainer reads the training set in file order), the eval split, the base model
    when it is on disk or pretrained here, and the held-out task items of the embedded default.
    """
    seeds = sorted({parse_run_name(Path(d).name).seed for d in runs})
    inputs = {
        "train": expand(rules.balance.output.data, seed=seeds),
        "balance_manifest": expand(rules.balance.output.manifest, seed=seeds),
        "eval": rules.split.output.eval,
    }
    if config["model"]["name_or_path"] is None or Path(model).expanduser().exists():
        inputs["model"] = model
    if is_synthetic():
        inputs["heldout"] = rules.synth_data.output.heldout
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


#: Train settings the schema types as numbers: written as floats (YAML would keep 5 an int; `--key 5` was
#: parsed as the float field it is).
NUMBER_SETTINGS = {
    key
    for key, spec in SCHEMA["properties"]["train"]["properties"].items()
    if spec.get("type") == "number"
}


def train_settings(regime):
    """The `ktos train --config` file of a regime's jobs, as a mapping: the train settings with the regime's
    overrides, the held-out task items, remote code, LoRA, train.extra_args (None values left out, so the
    library's defaults apply). Method, learning rate and seed come from each run's name (--run_dirs).
    """
    settings = dict(config["train"])
    overrides = regime_settings(regime)
    settings.update(
        {
            k: v
            for k, v in overrides.items()
            if k not in ("name", "learning_rates", "model_size")
        }
    )
    extra = settings.pop("extra_args")
    lists = {key: settings.pop(key) for key in ("quality_steps", "report_to")}
    for key in ("num_processes", "accelerate_config"):
        settings.pop(key)
    out = {"save_strategy": "steps", **settings, "regime": regime}
    if is_synthetic():
        out["heldout"] = str(rules.synth_data.output.heldout)
    if config["model"]["trust_remote_code"]:
        out["trust_remote_code"] = True
    peft = dict(config["model"]["peft"])
    targets = peft.pop("lora_target_modules")
    if peft["use_peft"]:
        out.update(peft)
    out.update(extra)
    out["report_to"] = list(lists["report_to"])
    if peft["use_peft"] and targets:
        out["lora_target_modules"] = list(targets)
    quality_steps = [s for s in lists["quality_steps"] if s < settings["max_steps"]]
    if quality_steps:
        out["quality_steps"] = quality_steps
    return {
        key: float(value) if key in NUMBER_SETTINGS else value
        for key, value in out.items()
        if value is not None
    }


def write_yaml(path, mapping, log):
    """Write `mapping` to `path` as YAML, in its order; say so in `log`."""
    Path(path).write_text(yaml.safe_dump(mapping, sort_keys=False))
    Path(log).write_text(f"wrote {path}\n")


def train_processes():
    """Processes of a training job: one per GPU when it asks for several, else train.num_processes."""
    gpus = config["resources"]["gpu"]
    return gpus if gpus > 1 else config["train"]["num_processes"]


def train_launcher():
    """How a training job starts `ktos train`: plain Python, or `accelerate launch` for several processes
    (one SLURM task; accelerate spawns the ranks inside it)."""
    n = train_processes()
    if n == 1:
        return "python -m ktos train"
    return (
        f"accelerate launch --config_file {shlex.quote(config['train']['accelerate_config'])} "
        f"--num_processes {n} -m ktos train"
    )


def analysis_flags():
    """`ktos figures` / `ktos tables` flags: the headline cell and the analysis settings."""
    analysis = config["analysis"]
    flags = cli_flags(
        {
            "regime": headline_regime(),
            "lr": lr_tag(config["headline"]["lr"]),
            "threshold": analysis["threshold"],
            "window": analysis["window"],
            "margin": analysis["margin"],
            "phase-end": analysis["phase_end"],
            "beta": analysis["beta"],
            "search-steps": analysis["search_steps"],
        }
    )
    flags += f" --checkpoints {' '.join(str(s) for s in analysis['checkpoints'])}"
    if analysis["predictions"]:
        predictions = Path(analysis["predictions"])
        if not predictions.is_absolute():
            predictions = Path(workflow.basedir).parent / predictions
        flags += f" --predictions {shlex.quote(str(predictions))}"
    if analysis["seed_sets"]:
        flags += " --seed-sets " + " ".join(
            shlex.quote(f"{name}={seeds}")
            for name, seeds in analysis["seed_sets"].items()
        )
    if analysis["arms"]:
        flags += " --arms " + " ".join(
            shlex.quote(f"{arm}={what}") for arm, what in analysis["arms"].items()
        )
    return flags


def train_resources():
    """Scheduler resources of a training job, in snakemake-executor-plugin-slurm's names: gpu (gpu_model,
    cpus_per_gpu and one task when GPUs are requested: accelerate spawns the ranks), mem_mb, runtime.
    """
    res = config["resources"]
    resources = {"gpu": res["gpu"], "mem_mb": res["mem_mb"], "runtime": res["runtime"]}
    if res["gpu"] > 0:
        if res["gpu_model"]:
            resources["gpu_model"] = res["gpu_model"]
        if res["cpus_per_gpu"]:
            resources["cpus_per_gpu"] = res["cpus_per_gpu"]
    if res["partition"]:
        resources["slurm_partition"] = res["partition"]
    return resources


TRAIN_RESOURCES = train_resources()
