"""The workflow's job planning: from a validated config to checks, run directories, jobs, flags and output names.

``workflow/rules/*.smk`` only call :class:`Plan`; every decision about what runs where is made (and unit
tested) here. Standard library only, so that Snakemake can import it at parse time whatever environment it
runs in. A :class:`Plan` holds the config with the schema's defaults filled in (``snakemake.utils.validate``
with ``set_default=True``), the schema itself (its defaults name the committed data and bases) and the
workflow's repository root (relative paths in the config are read from it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...runnames import lr_tag, parse_run_name, run_name
from ...sources import looks_like_path
from ...toy.bases import CHECKSUMS_FILE, base_name

log = logging.getLogger(__name__)

#: Data source that makes the workflow write the embedded synthetic task (`ktos synth-data`).
SYNTHETIC = "synthetic"
#: Origins of a trajectory table that figures are drawn from: this workflow's runs
#: (results/studies/<study>), or the committed reference copy (results/reference/<study>).
ORIGINS = ("studies", "reference")
#: Settings that make the prepared, split and balanced data (the synthetic task's included).
DATA_KEYS: dict[str, tuple[str, ...]] = {
    "data": ("source", "split", "eval_fraction", "seed"),
    "synthetic": ("seed", "rows", "desirable", "heldout"),
    "balance": ("strategy",),
    "train": ("per_device_train_batch_size",),
}
#: Settings of the synthetic data and the pretraining that make a base model, besides its size and seed.
RECIPE_KEYS = ("seed", "rows", "desirable", "heldout", "pretrain_steps", "pretrain_batch_size", "pretrain_max_seconds")


class ConfigError(ValueError):
    """A config that the JSON schema accepts but that cannot run; the message names the key."""


def cli_flags(mapping: Mapping[str, Any]) -> str:
    """Render {key: value} as `--key value` flags (booleans as true/false, None left out), quoted."""
    flags = []
    for key, value in mapping.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        flags.append(f"--{key} {shlex.quote(str(value))}")
    return " ".join(flags)


@dataclass(frozen=True)
class Plan:
    """A study's jobs and files, planned from its config (see the module docstring)."""

    config: Mapping[str, Any]
    schema: Mapping[str, Any]
    root: Path

    # ------------------------------------------------------------------------------------------- settings

    def default(self, section: str, key: str) -> Any:
        """The schema's default of config key ``section.key``."""
        return self.schema["properties"][section]["properties"][key].get("default")

    @property
    def study(self) -> str:
        """The study's name (config study)."""
        return str(self.config["study"])

    @property
    def is_synthetic(self) -> bool:
        """Whether the workflow writes and trains on the embedded synthetic task."""
        return bool(self.config["data"]["source"] == SYNTHETIC)

    @property
    def regime_names(self) -> list[str]:
        """The configured regimes' names, in order."""
        return [regime["name"] for regime in self.config["regimes"]]

    def regime(self, name: str) -> Mapping[str, Any]:
        """A regime's entry of config regimes."""
        return next(r for r in self.config["regimes"] if r["name"] == name)

    def learning_rates(self, regime: str, method: str) -> list[float]:
        """The learning rates ``method`` is trained at in ``regime`` (the regime's own, else the config's)."""
        rates = self.regime(regime).get("learning_rates", self.config["learning_rates"])
        return list(rates) if isinstance(rates, list) else list(rates.get(method, []))

    def regime_train(self, regime: str, key: str) -> Any:
        """Train setting ``key`` in ``regime``: its override, else config train."""
        return self.regime(regime).get(key, self.config["train"][key])

    @property
    def headline_regime(self) -> str:
        """The regime of Figures 2 and 3 and of the verdict."""
        return str(self.config["headline"]["regime"] or self.regime_names[0])

    # ---------------------------------------------------------------------------------------------- checks

    def check_source(self, key: str, source: str) -> None:
        """Refuse config ``key`` naming a local path that does not exist; a possible hub id (org/name, not on
        disk) only warns: it must be in the local Hugging Face cache, since jobs run offline."""
        if Path(source).expanduser().exists():
            return
        if looks_like_path(source):
            raise ConfigError(
                f"config key {key}: {source!r} does not exist (no such file or directory). "
                "Point it at a local dataset file or directory, or a cached hub id (org/name)."
            )
        log.warning(
            "config key %s: %r is not a local path; it is read as a Hugging Face hub id and must already be in "
            "the local cache (jobs run offline).",
            key,
            source,
        )

    def check(self) -> None:
        """Cross-key checks that the JSON schema cannot express; each :class:`ConfigError` names its key."""
        config = self.config
        if not self.is_synthetic:
            self.check_source("data.source", config["data"]["source"])
        model = config["model"]["name_or_path"]
        if model is None and not self.is_synthetic:
            raise ConfigError(
                "config key model.name_or_path: null (pretrain the tiny base model) needs "
                f"data.source: {SYNTHETIC}; set it to a hub id or local model directory."
            )
        if model is not None:
            self.check_source("model.name_or_path", model)
            sized = [r["name"] for r in config["regimes"] if "model_size" in r]
            if sized:
                raise ConfigError(
                    f"config key regimes: {', '.join(sized)} set model_size, which sizes the pretrained base "
                    "model: it needs model.name_or_path: null."
                )
        synthetic = config["synthetic"]
        if self.is_synthetic and synthetic["desirable"] >= synthetic["rows"]:
            raise ConfigError(
                "config key synthetic.desirable must be below synthetic.rows (KTO needs undesirable rows too)."
            )
        names = self.regime_names
        if len(set(names)) != len(names):
            raise ConfigError(f"config key regimes: names must be unique, got {names}")
        regime = self.headline_regime
        if regime not in names:
            raise ConfigError(f"config key headline.regime: {regime!r} is not one of regimes ({', '.join(names)})")
        lr = lr_tag(config["headline"]["lr"])
        for method in config["methods"]:
            if lr not in {lr_tag(x) for x in self.learning_rates(regime, method)}:
                raise ConfigError(
                    f"config key headline.lr: {lr} is not a learning rate of {method} in regime {regime!r}"
                )
        steps = self.regime_train(regime, "max_steps")
        analysis = config["analysis"]
        for key in ("window", "phase_end"):
            if analysis[key] is not None and analysis[key] > steps:
                raise ConfigError(
                    f"config key analysis.{key}: step {analysis[key]} is past the headline regime's last step "
                    f"({regime!r} trains {steps} steps)"
                )

    # ------------------------------------------------------------------------------------------ data, bases

    @property
    def data_tag(self) -> str:
        """The data's directory name under results/data: "default" for the schema's defaults, else "d" and the
        first 8 hex digits of the SHA-256 of the settings that differ, so that two configs whose data differ
        never share (and never overwrite) it, and two whose data agree do."""
        changed = {
            f"{section}.{key}": self.config[section][key]
            for section, keys in DATA_KEYS.items()
            for key in keys
            if self.config[section][key] != self.default(section, key)
        }
        if not changed:
            return "default"
        return "d" + hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]

    def run_dir(self, regime: str, base: str | None, method: str, lr: float, seed: int) -> str:
        """A run's directory: results/runs/<study>/<regime>/<base name>/<run name> (names:
        :mod:`ktos.runnames`); with a configured model (base None) results/runs/<study>/<regime>/<run name>."""
        parts = [self.study, regime, *([base] if base else []), run_name(method, lr, seed)]
        return "results/runs/" + "/".join(parts)

    @property
    def base_recipe(self) -> dict[str, Any]:
        """The recipe settings that differ from the schema's defaults, with which the committed bases were made
        (empty for the committed recipe): part of a base's name (:func:`ktos.toy.bases.base_name`)."""
        synthetic = self.config["synthetic"]
        return {k: synthetic[k] for k in RECIPE_KEYS if synthetic[k] != self.default("synthetic", k)}

    @property
    def committed_bases_dir(self) -> Path:
        """synthetic.committed_bases, a relative path read from the workflow's repository root."""
        path = Path(self.config["synthetic"]["committed_bases"]).expanduser()
        return path if path.is_absolute() else self.root / path

    def regime_size(self, regime: str) -> str:
        """The size of the base model a regime trains (its model_size, else synthetic.size)."""
        return str(self.regime(regime).get("model_size", self.config["synthetic"]["size"]))

    def bases(self, regime: str) -> dict[str | None, str]:
        """{base name: model} that a regime's runs start from, in synthetic.base_seeds' order: the committed base
        of each name when synthetic.bases is committed and there is one, else the base pretrained here
        (results/models/bases/<name>); with model.name_or_path set, that model alone (under the name None)."""
        if self.config["model"]["name_or_path"] is not None:
            return {None: self.config["model"]["name_or_path"]}
        out: dict[str | None, str] = {}
        for seed in self.config["synthetic"]["base_seeds"]:
            name = base_name(self.regime_size(regime), seed, self.base_recipe)
            committed = self.committed_bases_dir / name
            use = self.config["synthetic"]["bases"] == "committed" and (committed / CHECKSUMS_FILE).is_file()
            out[name] = str(committed) if use else f"results/models/bases/{name}"
        return out

    @property
    def pretrained_bases(self) -> dict[str, tuple[str, int]]:
        """{base name: (size, pretraining seed)} of every base this study pretrains (not committed; none with a
        configured model)."""
        if self.config["model"]["name_or_path"] is not None:
            return {}
        seeds = self.config["synthetic"]["base_seeds"]
        return {
            str(name): (self.regime_size(regime), seed)
            for regime in self.regime_names
            for (name, path), seed in zip(self.bases(regime).items(), seeds, strict=True)
            if path.startswith("results/models/bases/")
        }

    @property
    def pretrain_flags(self) -> str:
        """`ktos pretrain-base` flags of the pretraining settings that are set (steps, batch size, time cap)."""
        synthetic = self.config["synthetic"]
        return cli_flags(
            {
                "steps": synthetic["pretrain_steps"],
                "batch-size": synthetic["pretrain_batch_size"],
                "max-seconds": synthetic["pretrain_max_seconds"],
            }
        )

    def reference_flag(self, base: str) -> str:
        """`--reference DIR` when a committed base of this name exists: its rebuild is compared with it."""
        committed = self.committed_bases_dir / base
        return f"--reference {shlex.quote(str(committed))}" if (committed / CHECKSUMS_FILE).is_file() else ""

    # ------------------------------------------------------------------------------------------- training

    @property
    def train_jobs(self) -> dict[str, tuple[str, str, list[str]]]:
        """{job name: (regime, base model, [run dir, ...])}: the runs of each regime and base split evenly into
        contiguous jobs (a seed's runs together) of at most resources.runs_per_job runs (one process each)."""
        size = self.config["resources"]["runs_per_job"]
        jobs = {}
        for regime in self.regime_names:
            for base, model in self.bases(regime).items():
                runs = [
                    self.run_dir(regime, base, method, lr, seed)
                    for seed in self.config["seeds"]
                    for method in self.config["methods"]
                    for lr in self.learning_rates(regime, method)
                ]
                n_jobs = -(-len(runs) // size)
                bounds = [round(i * len(runs) / n_jobs) for i in range(n_jobs + 1)]
                prefix = f"{regime}_{base}" if base else regime
                for i in range(n_jobs):
                    jobs[f"{prefix}_{i}"] = (regime, model, runs[bounds[i] : bounds[i + 1]])
        return jobs

    def train_settings(self, regime: str, heldout: str) -> dict[str, Any]:
        """The `ktos train --config` file of a regime's jobs, as a mapping: the train settings with the regime's
        overrides, the held-out task items (``heldout``, with the synthetic task), remote code, LoRA,
        train.extra_args (None values left out, so the library's defaults apply); settings the schema types as
        numbers are floats. Method, learning rate and seed come from each run's name (--run_dirs)."""
        settings = dict(self.config["train"])
        overrides = self.regime(regime)
        settings.update({k: v for k, v in overrides.items() if k not in ("name", "learning_rates", "model_size")})
        extra = settings.pop("extra_args")
        lists = {key: settings.pop(key) for key in ("quality_steps", "report_to")}
        for key in ("num_processes", "accelerate_config"):
            settings.pop(key)
        out = {"save_strategy": "steps", **settings, "regime": regime}
        if self.is_synthetic:
            out["heldout"] = str(heldout)
        if self.config["model"]["trust_remote_code"]:
            out["trust_remote_code"] = True
        peft = dict(self.config["model"]["peft"])
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
        numbers = {
            k for k, spec in self.schema["properties"]["train"]["properties"].items() if spec.get("type") == "number"
        }
        return {key: float(v) if key in numbers else v for key, v in out.items() if v is not None}

    @property
    def train_processes(self) -> int:
        """Processes of a training job: one per GPU when it asks for several, else train.num_processes."""
        gpus = self.config["resources"]["gpu"]
        return int(gpus if gpus > 1 else self.config["train"]["num_processes"])

    @property
    def train_launcher(self) -> str:
        """How a training job starts `ktos train`: plain Python, or `accelerate launch` for several processes
        (one SLURM task; accelerate spawns the ranks inside it)."""
        n = self.train_processes
        if n == 1:
            return "python -m ktos train"
        accelerate = shlex.quote(self.config["train"]["accelerate_config"])
        return f"accelerate launch --config_file {accelerate} --num_processes {n} -m ktos train"

    @property
    def train_resources(self) -> dict[str, Any]:
        """Scheduler resources of a training job, in snakemake-executor-plugin-slurm's names: gpu (gpu_model,
        cpus_per_gpu when GPUs are requested), mem_mb, runtime, slurm_partition."""
        res = self.config["resources"]
        resources = {"gpu": res["gpu"], "mem_mb": res["mem_mb"], "runtime": res["runtime"]}
        if res["gpu"] > 0:
            resources.update({k: res[k] for k in ("gpu_model", "cpus_per_gpu") if res[k]})
        if res["partition"]:
            resources["slurm_partition"] = res["partition"]
        return resources

    # ---------------------------------------------------------------------------------------------- inputs

    def run_files(self, name: str) -> list[str]:
        """One file (trajectory.jsonl or run_info.json) of every run directory of the study."""
        return [f"{d}/{name}" for *_, dirs in self.train_jobs.values() for d in dirs]

    def prepare_input(self, synthetic: str) -> dict[str, str]:
        """Input of `ktos prepare`: the synthetic data (file ``synthetic``), or the configured source when it
        is on disk (a hub id is no file)."""
        if self.is_synthetic:
            return {"source": synthetic}
        source = self.config["data"]["source"]
        return {"source": source} if Path(source).expanduser().exists() else {}

    def train_input(self, model: str, runs: list[str], files: Mapping[str, str]) -> dict[str, Any]:
        """Inputs of a training job: each run's seed's balanced copy of the training set and its manifest
        (``files`` "train" and "balance_manifest", patterns in ``{seed}``: the seed sets the batch order), the
        eval split ("eval"), the base model when it is on disk or pretrained here, and the held-out task items
        ("heldout") of the embedded default."""
        seeds = sorted({parse_run_name(Path(d).name).seed for d in runs})
        inputs: dict[str, Any] = {
            key: [files[key].format(seed=seed) for seed in seeds] for key in ("train", "balance_manifest")
        }
        inputs["eval"] = files["eval"]
        if self.config["model"]["name_or_path"] is None or Path(model).expanduser().exists():
            inputs["model"] = model
        if self.is_synthetic:
            inputs["heldout"] = files["heldout"]
        return inputs
