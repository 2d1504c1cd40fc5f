"""The Snakemake workflow: dry runs, lint, formatting, config validation, and real runs on CPU.

Real runs use .test/config/config.yaml (one seed, one learning rate, a few steps) in a copy of the
workflow under a temporary directory: end to end with the default profile, through the SLURM
profile with stand-in SLURM commands (tests/slurm_standins), and a training run killed part-way
and finished by a rerun that resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ktos.provenance import weights_sha256
from ktos.toy.bases import base_name

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STANDINS = Path(__file__).resolve().parent / "slurm_standins"
#: What a copy of the workflow needs (the ktos package itself is installed): a checkout's committed bases too.
WORKFLOW_FILES = ("workflow", "config", "profiles", ".test", "results/reference/bases")
#: The bases of .test/config/config.yaml: its recipe (every synthetic key it sets but base_seeds) differs from the
#: committed one, so they are pretrained under a name of their own (ktos.toy.bases.base_name).
TEST_SYNTHETIC = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())["synthetic"]
TEST_BASES = tuple(
    base_name("0.09M", seed, {k: v for k, v in TEST_SYNTHETIC.items() if k != "base_seeds"})
    for seed in TEST_SYNTHETIC["base_seeds"]
)
#: Run directories of .test/config/config.yaml: study "test", regime "main", each base, both methods, lr 1e-3, seed 0.
TEST_RUNS = tuple(f"results/runs/test/main/{b}/{m}_lr0.001_seed0" for b in TEST_BASES for m in ("kto", "kto_s"))
#: Figures and tables a two-method, one-regime, one-learning-rate table over two bases yields (no frontier: one lr).
FIGURES = ("fig2_kto_kl", "fig3_kto_s_kl", "paired", "companion", "kl_relation")
TABLES = ("verdict.md", "runs.csv", "cells.csv", "paired.csv", "matched_kl.csv", "checkpoints.csv", "base_cells.csv",
          "base_paired.csv")  # fmt: skip

#: The slow tier for the variants of a check whose first case stays in the fast tier.
SLOW = pytest.mark.slow


def runs_of(command: str) -> int:
    """How many runs a `ktos train` command line names (--run_dirs)."""
    named = command.split("--run_dirs", 1)[1].split(" --", 1)[0]
    return len(re.findall(r"_lr[0-9.e+-]+_seed[0-9]+", named))


def train_jobs(counts: dict[str, int]) -> int:
    """How many training jobs a Job stats table lists (one rule per job: train_<regime>_<i>)."""
    return sum(
        n for rule, n in counts.items() if rule.startswith("train_") and rule not in ("train_config", "train_configs")
    )


def train_configs(repo: Path, *configfiles: str) -> dict[str, dict]:
    """Write the training jobs' `ktos train --config` files (target train_configs; nothing is trained) and
    read them: {job: settings}."""
    result = snakemake(repo, "train_configs", "--cores", "1", "--configfile", *configfiles)
    assert result.returncode == 0, result.stdout
    study = yaml.safe_load((repo / configfiles[0]).read_text()).get("study", "main")
    return {p.stem: yaml.safe_load(p.read_text()) for p in (repo / f"results/train_configs/{study}").glob("*.yaml")}


def _env(**extra: str) -> dict[str, str]:
    """Offline, this venv's executables first, no GPU."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        MPLBACKEND="Agg",
        CUDA_VISIBLE_DEVICES="",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def snakemake(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir``; stdout and stderr together in ``.stdout``."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a snakemake run: {rule: count}."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    counts = {}
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def write_yaml(path: Path, data: dict) -> str:
    """Write ``data`` as YAML (a config overlay for --configfile); returns the path."""
    path.write_text(yaml.safe_dump(data))
    return str(path)


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow (workflow/Snakefile and rules, configs, profiles) to ``dest``; returns ``dest``."""
    dest.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the workflow to run in."""
    return copy_workflow(tmp_path / "repo")


# --------------------------------------------------------------------------------------- static checks


def test_dry_run_default_config(repo: Path) -> None:
    """The default trains every run from each of its committed bases (no pretraining), one job per base."""
    result = snakemake(repo, "-n", "-p")
    assert result.returncode == 0, result.stdout
    # A training job names its runs (--run_dirs); each run's name alone sets its method, lr and seed.
    commands = [line for line in result.stdout.splitlines() if "-m ktos train" in line]
    for command in commands:
        assert "--run_dirs" in command and "--use_kto_s" not in command and "--learning_rate" not in command, command
        assert "--allow_divergence true" in command, command  # a diverged run is an outcome, not a failed job
    counts = job_counts(result.stdout)
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    bases = config["synthetic"]["base_seeds"]
    assert len(bases) >= 5
    per_base = len(config["methods"]) * len(config["learning_rates"]) * len(config["seeds"]) * len(config["regimes"])
    schema = yaml.safe_load((repo / "workflow/schemas/config.schema.yaml").read_text())["properties"]["resources"]
    per_job = config.get("resources", {}).get("runs_per_job", schema["properties"]["runs_per_job"]["default"])
    assert train_jobs(counts) == len(commands) == len(bases) * -(-per_base // per_job)
    assert sum(map(runs_of, commands)) == per_base * len(bases)  # every run in exactly one job
    for seed in bases:
        committed = repo / f"results/reference/bases/0.09M_seed{seed}"
        mine = [c for c in commands if f"--model_name_or_path {committed} " in c]
        assert mine and all(f"results/runs/main/constant_b0.2/0.09M_seed{seed}/kto" in c for c in mine), seed
    assert "pretrain_base" not in counts  # committed bases are not pretrained again
    assert counts["balance"] == len(config["seeds"])  # one batch order per seed, shared by the bases
    for rule in ("synth_data", "prepare", "split", "extract_kl", "draw_figures_studies", "write_tables_studies"):
        assert counts[rule] == 1, rule


def test_dry_run_rebuild_pretrains_each_base_and_compares_it(repo: Path, tmp_path: Path) -> None:
    overlay = write_yaml(tmp_path / "rebuild.yaml", {"synthetic": {"bases": "rebuild", "base_seeds": [0, 3]}})
    result = snakemake(repo, "-n", "-p", "--configfile", overlay)
    assert result.returncode == 0, result.stdout
    assert job_counts(result.stdout)["pretrain_base"] == 2
    for seed in (0, 3):
        committed = repo / f"results/reference/bases/0.09M_seed{seed}"
        line = next(x for x in result.stdout.splitlines() if f"--output results/models/bases/0.09M_seed{seed} " in x)
        log = f"results/logs/pretrain_base/0.09M_seed{seed}.log"
        assert f"--size 0.09M --seed {seed} " in line and line.endswith(f"--reference {committed} > {log} 2>&1")
        assert f"--model_name_or_path results/models/bases/0.09M_seed{seed} " in result.stdout


@pytest.mark.parametrize(
    "study", ["scale", pytest.param("scale_2.6M", marks=SLOW), pytest.param("scale_gpu", marks=SLOW)]
)
def test_dry_run_size_sweeps_train_each_size_from_its_bases(repo: Path, study: str) -> None:
    """A size sweep trains each regime from its size's bases: the committed ones where there are, else bases
    pretrained here once each, with the size's preset, named for their recipe."""
    config = yaml.safe_load((repo / "config/config.yaml").read_text()) | yaml.safe_load(
        (repo / f"config/{study}.yaml").read_text()
    )  # the study's keys on top of the default's (its sections whole: each sets what it needs)
    result = snakemake(repo, "-n", "-p", "--configfile", f"config/{study}.yaml")
    assert result.returncode == 0, result.stdout
    seeds = config["synthetic"]["base_seeds"]
    pretrained = 0
    for regime in config["regimes"]:
        size = regime["model_size"]
        for seed in seeds:
            base = repo / f"results/reference/bases/{size}_seed{seed}"
            batch = config["synthetic"].get("pretrain_batch_size", 64)
            if batch == 64 and (base / "SHA256SUMS").is_file():
                model = str(base)
            else:
                lines = [x for x in result.stdout.splitlines() if f"--size {size} --seed {seed}" in x]
                assert len(lines) == 1 and f"--batch-size {batch}" in lines[0], (size, seed)
                model = lines[0].split("--output ")[1].split()[0]
                assert model.startswith(f"results/models/bases/{size}_seed{seed}"), model
                pretrained += 1
            runs = f"results/runs/{study}/{regime['name']}/{Path(model).name}/"
            trains = [line for line in result.stdout.splitlines() if runs in line and "-m ktos train" in line]
            assert trains and all(f"--model_name_or_path {model} " in line for line in trains), (size, seed)
    assert job_counts(result.stdout).get("pretrain_base", 0) == pretrained
    n_runs = len(config["seeds"]) * len(config["learning_rates"]) * 2 * len(config["regimes"]) * len(seeds)
    runs = sum(runs_of(line) for line in result.stdout.splitlines() if "-m ktos train" in line)
    assert runs == n_runs


@pytest.mark.slow
def test_dry_run_step_grid_trains_kto_zero(repo: Path) -> None:
    result = snakemake(repo, "-n", "-p", "--configfile", "config/step_grid.yaml")
    assert result.returncode == 0, result.stdout
    config = yaml.safe_load((repo / "config/step_grid.yaml").read_text())
    # each train command line up to its checkpoint clean-up (which names the runs again)
    runs = " ".join(line.split(" && ")[0] for line in result.stdout.splitlines() if "-m ktos train" in line)
    assert runs.count("/kto_zero_lr") == len(config["learning_rates"]) * len(config["seeds"])
    assert "--config results/train_configs/step_grid/" in runs
    settings = train_configs(repo, "config/step_grid.yaml")
    for values in settings.values():  # every 10 steps, below max_steps
        assert values["quality_steps"][:3] == [10, 20, 30] and max(values["quality_steps"]) < values["max_steps"], (
            values
        )


@pytest.mark.slow
def test_dry_run_paper_config(repo: Path) -> None:
    """paper.yaml: real data from a local file, a hub model id, GPU resources, bf16; no synthetic jobs."""
    paper = yaml.safe_load((repo / "config/paper.yaml").read_text())
    data_file = repo / paper["data"]["source"]
    data_file.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_text(
        "".join(json.dumps({"prompt": f"Q{i}", "completion": f" A{i}", "label": i % 3 != 0}) + "\n" for i in range(12))
    )
    result = snakemake(repo, "-n", "-p", "--configfile", "config/paper.yaml")
    assert result.returncode == 0, result.stdout
    counts = job_counts(result.stdout)
    assert "synth_data" not in counts and "pretrain_base" not in counts
    assert train_jobs(counts) == len(paper["methods"]) * len(paper["learning_rates"]) * len(paper["seeds"])
    assert f"--model_name_or_path {paper['model']['name_or_path']}" in result.stdout
    settings = train_configs(repo, "config/paper.yaml")
    assert len(settings) == train_jobs(counts)
    assert all(s["bf16"] is True and "heldout" not in s for s in settings.values()), settings
    assert "gpu=1" in result.stdout
    assert "hub id" in result.stdout  # the model id is not on disk: a warning, not an error


@pytest.mark.parametrize("keep", [pytest.param(False, marks=SLOW), True])
def test_dry_run_saves_weights_only_when_models_are_kept(repo: Path, keep: bool) -> None:
    """keep_models: false (the default) saves no weights and declares none; true saves and declares each run's."""
    overlay = write_yaml(repo / "keep.yaml", {"keep_models": keep})
    result = snakemake(repo, "-n", "-p", "--configfile", ".test/config/config.yaml", overlay)
    assert result.returncode == 0, result.stdout
    train = [line for line in result.stdout.splitlines() if "-m ktos train" in line]
    assert train and all(f"--save_model {str(keep).lower()}" in line for line in train), train
    outputs = " ".join(line for line in result.stdout.splitlines() if line.strip().startswith("output:"))
    for run in TEST_RUNS:
        assert (f"{run}/model.safetensors" in outputs) is keep, outputs


def test_catalog_metadata_matches_the_workflow() -> None:
    """.snakemake-workflow-catalog.yml: conda deployment (workflow/envs), a report, the .test config; no flags."""
    usage = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    deployment = usage["software-stack-deployment"]
    assert deployment["conda"] is True and any((ROOT / "workflow/envs").glob("*.yaml"))
    assert not deployment["singularity"] and not deployment["singularity+conda"]  # no container: is declared
    assert "container:" not in (ROOT / "workflow/Snakefile").read_text()
    assert usage["report"] is True and "report: " in (ROOT / "workflow/Snakefile").read_text()
    assert not usage["mandatory-flags"]["flags"]
    assert (ROOT / ".test/config/config.yaml").is_file() and (ROOT / "workflow/Snakefile").is_file()


@pytest.mark.slow
def test_train_config_files_are_what_ktos_train_parses(repo: Path) -> None:
    """Each training job reads its settings from results/train_configs/<study>/<job>.yaml: the config's train
    settings with the regime's overrides, which `ktos train --config` (TRL's parser) accepts as they are."""
    from ktos.runs.command import parse_train_args

    overlay = write_yaml(
        repo / "regimes.yaml",
        {
            "regimes": [{"name": "main"}, {"name": "long", "max_steps": 8, "beta": 0.05}],
            "synthetic": {"base_seeds": [0]},
        },
    )
    settings = train_configs(repo, ".test/config/config.yaml", overlay)
    main, long = (f"{regime}_{TEST_BASES[0]}_0" for regime in ("main", "long"))  # <regime>_<base>_<i>
    assert sorted(settings) == [long, main]
    config = yaml.safe_load((repo / ".test/config/config.yaml").read_text())
    for job, regime in ((main, {}), (long, {"max_steps": 8, "beta": 0.05})):
        values = settings[job]
        assert values["regime"] == job.split("_")[0] and values["save_strategy"] == "steps"
        assert values["max_steps"] == regime.get("max_steps", config["train"]["max_steps"])
        assert values["heldout"].endswith("/synthetic/heldout.jsonl") and values["report_to"] == ["tensorboard"]
        assert values["heldout"].startswith("results/data/d")  # .test's data differ: a directory of their own
        assert isinstance(values["beta"], float) and values["beta"] == regime.get("beta", 0.2)
        path = repo / f"results/train_configs/test/{job}.yaml"
        model, run, data, train = parse_train_args(
            ["--config", str(path), "--output_dir", "x", "--model_name_or_path", "m", "--train_data", "d"]
        )
        assert (
            train.max_steps == values["max_steps"]
            and train.beta == values["beta"]
            and data.heldout == values["heldout"]
        )
        assert run.quality_steps == [2] and model.model_name_or_path == "m"
    dry = snakemake(repo, "-n", "-p", "--configfile", ".test/config/config.yaml", overlay)
    commands = [line for line in dry.stdout.splitlines() if "-m ktos train" in line]
    assert len(commands) == 2 and all("--config results/train_configs/test/" in c for c in commands), commands
    assert not any("--beta" in c or "--max_steps" in c for c in commands)  # the settings are in the file only


def test_the_workflow_dry_runs_as_a_module_of_another(tmp_path: Path) -> None:
    """docs/pipeline.md's Snakefile (`module ktos` + `use rule * from ktos`) in a directory of its own, with a
    copy of config/config.yaml: the default study is planned there, from this repository's committed bases."""
    text = (ROOT / "docs/pipeline.md").read_text()
    snakefile = next(block for block in text.split("```python\n")[1:] if "module ktos:" in block).split("```")[0]
    deploy = tmp_path / "deploy"
    (deploy / "workflow").mkdir(parents=True)
    (deploy / "config").mkdir()
    (deploy / "workflow/Snakefile").write_text(snakefile.replace("path/to/ktos", str(ROOT)))
    shutil.copy2(ROOT / "config/config.yaml", deploy / "config/config.yaml")
    result = snakemake(deploy, "-n", "-p")
    assert result.returncode == 0, result.stdout
    counts = job_counts(result.stdout)
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    assert train_jobs(counts) == len(config["synthetic"]["base_seeds"]) and "pretrain_base" not in counts
    assert f"--model_name_or_path {ROOT}/results/reference/bases/0.09M_seed0 " in result.stdout
    assert counts["draw_figures_studies"] == counts["write_tables_studies"] == 1


def test_lint() -> None:
    result = snakemake(ROOT, "--lint")
    assert result.returncode == 0, result.stdout
    assert "Congratulations, your workflow is in a good condition!" in result.stdout, result.stdout


def test_rules_run_the_installed_ktos() -> None:
    """No path patching: jobs and the parse-time config checks import whichever ktos the environment holds."""
    for path in [ROOT / "workflow/Snakefile", *(ROOT / "workflow/rules").glob("*.smk")]:
        text = path.read_text()
        for patch in ("PYTHONPATH", "sys.path", "envvars:", '/ "src"'):
            assert patch not in text, f"{path.relative_to(ROOT)} patches the import path ({patch!r})"


def test_snakefmt() -> None:
    snakefmt = shutil.which("snakefmt", path=str(BIN)) or shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt is not installed (pip install -e '.[test]')")
    result = subprocess.run([snakefmt, "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("overlay", "key"),
    [
        ({"methods": ["kto", "dpo"]}, "methods"),
        pytest.param({"train": {"beta": -0.1}}, "beta", marks=SLOW),
        pytest.param({"learning_rates": [1.0e-3, -1.0e-4]}, "learning_rates", marks=SLOW),
        pytest.param({"seeds": [0, 1.5]}, "seeds", marks=SLOW),
        pytest.param({"learning_rate": [1.0e-3]}, "learning_rate", marks=SLOW),
        ({"headline": {"lr": 5.0e-3}}, "headline.lr"),
        pytest.param(
            {"data": {"source": "data/missing.jsonl"}, "model": {"name_or_path": "tiny-model"}},
            "data.source",
            marks=SLOW,
        ),
        pytest.param({"data": {"source": "data/feedback.jsonl"}}, "model.name_or_path", marks=SLOW),
    ],
    ids=[
        "unknown-method",
        "negative-beta",
        "negative-lr",
        "float-seed",
        "unknown-key",
        "headline-lr-not-swept",
        "missing-dataset",
        "no-model-for-real-data",
    ],
)
def test_bad_config_fails_before_any_job(repo: Path, overlay: dict, key: str) -> None:
    """A bad config stops the workflow at parse time, naming the key; nothing is run or written."""
    (repo / "data").mkdir()
    (repo / "data/feedback.jsonl").write_text('{"prompt": "Q", "completion": " A", "label": true}\n')
    bad = write_yaml(repo / "bad.yaml", overlay)
    result = snakemake(repo, "--cores", "1", "--configfile", ".test/config/config.yaml", bad)
    assert result.returncode != 0, result.stdout
    assert key in result.stdout, result.stdout
    assert [p.name for p in (repo / "results").iterdir()] == ["reference"]  # the committed bases alone
    assert "Select jobs to execute" not in result.stdout and "Job stats" not in result.stdout  # nothing scheduled


# ---------------------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, float]:
    """.test/config/config.yaml run end to end on CPU once: (workflow copy, snakemake result, seconds)."""
    repo = copy_workflow(tmp_path_factory.mktemp("study") / "repo")
    started = time.monotonic()
    result = snakemake(repo, "--cores", "2", "--configfile", ".test/config/config.yaml")
    return repo, result, time.monotonic() - started


def repo_with_data(study_repo: Path, dest: Path) -> Path:
    """A fresh workflow copy holding the study's prepared data (not its runs): only training is left to do."""
    repo = copy_workflow(dest)
    shutil.copytree(study_repo / "results/data", repo / "results/data")
    return repo


def check_outputs(repo: Path) -> None:
    """The figures, tables and trajectory table of a finished .test/config/config.yaml run."""
    for name in FIGURES:
        assert (repo / f"results/studies/test/figures/{name}.png").stat().st_size > 0, name
    for name in TABLES:
        assert (repo / f"results/studies/test/tables/{name}").stat().st_size > 0, name
    table = pd.read_csv(repo / "results/studies/test/trajectories.csv.gz")
    max_steps = yaml.safe_load((repo / ".test/config/config.yaml").read_text())["train"]["max_steps"]
    assert sorted(table["method"].unique()) == ["kto", "kto_s"] and sorted(table["base"].unique()) == list(TEST_BASES)
    assert len(table) == 2 * len(TEST_BASES) * max_steps
    assert set(table["status"]) == {"completed"}
    measured = table.dropna(subset=["policy_kl"])  # at step 1 and the last (policy_kl_steps 5 > max_steps 4)
    assert sorted(measured["step"].unique()) == [1, max_steps] and (measured["policy_kl"] >= 0).all()


@pytest.mark.slow
def test_end_to_end_test_config_saves_no_weights_unless_kept(
    study: tuple[Path, subprocess.CompletedProcess, float],
) -> None:
    """.test/config/config.yaml through the whole DAG on CPU: figures, tables, no weights saved (models not kept),
    report."""
    repo, result, seconds = study
    assert result.returncode == 0, result.stdout
    print(f"end-to-end run of .test/config/config.yaml: {seconds:.1f} s")
    check_outputs(repo)
    for base in TEST_BASES:
        assert (repo / f"results/models/bases/{base}/config.json").exists(), "the embedded bases are kept outputs"
        assert (repo / f"results/benchmarks/train/test/main_{base}_0.tsv").exists()  # one job trained its runs
    for run in TEST_RUNS:
        info = json.loads((repo / f"{run}/run_info.json").read_text())
        base = repo / "results/models/bases" / Path(run).parent.name
        assert info["base"]["name"] == base.name and info["base"]["sha256"] == weights_sha256(base)
        assert info["status"] == "completed" and info["quality"]["metric"] == "task_accuracy"
        correct = info["step_quality_correct"]["2"]  # each held-out item's outcome at the quality step
        assert set(correct) <= {"0", "1"} and len(correct) == info["quality"]["n"] == len(info["quality"]["correct"])
        assert info["config"]["use_kto_s"] is Path(run).name.startswith("kto_s_")
        assert info["regime"] == "main" and info["git_revision"]
        assert list((repo / run).rglob("events.out.tfevents.*")), "train.report_to: tensorboard wrote no event file"
        assert not (repo / f"{run}/model.safetensors").exists(), "run weights are not kept by default"

    again = snakemake(repo, "-n", "--configfile", ".test/config/config.yaml")
    assert "Nothing to be done" in again.stdout, again.stdout

    report = snakemake(repo, "--configfile", ".test/config/config.yaml", "--report", "report.html")
    assert report.returncode == 0, report.stdout
    assert (repo / "report.html").stat().st_size > 0


@pytest.mark.slow
def test_a_test_run_leaves_the_default_study_as_planned(
    study: tuple[Path, subprocess.CompletedProcess, float], tmp_path: Path
) -> None:
    """Studies own their inputs: after the .test run (other data, other bases) the default's dry run plans
    exactly what it plans in a fresh copy, and no "Params have changed"."""
    repo, result, _ = study
    assert result.returncode == 0, result.stdout
    fresh = snakemake(copy_workflow(tmp_path / "fresh"), "-n")
    after = snakemake(repo, "-n")
    assert fresh.returncode == after.returncode == 0, after.stdout
    assert job_counts(after.stdout) == job_counts(fresh.stdout)
    assert "Params have changed" not in after.stdout and "Code has changed" not in after.stdout


def declared_files(repo: Path, *configfiles: str) -> tuple[set[Path], set[Path]]:
    """(output files and logs, output directories) of every job of the DAG, read from `snakemake --summary`."""
    result = snakemake(repo, "--summary", "--configfile", *configfiles)
    assert result.returncode == 0, result.stdout
    rows = [line.split("\t") for line in result.stdout.splitlines() if line.count("\t") >= 5][1:]
    outputs = {repo / row[0] for row in rows}
    logs = {repo / log for row in rows for log in row[3].split(", ") if log != "-"}
    dirs = {path for path in outputs if path.is_dir()}
    return (outputs - dirs) | logs, dirs


@pytest.mark.slow
def test_every_file_the_study_writes_is_declared(study: tuple[Path, subprocess.CompletedProcess, float]) -> None:
    """Each file under results/ after the .test run is an output or log of a job in the DAG, or lies in an output
    directory (a base model, tensorboard's events); Snakemake writes results/benchmarks itself."""
    repo, result, _ = study
    assert result.returncode == 0, result.stdout
    files, dirs = declared_files(repo, ".test/config/config.yaml")
    written = {
        path
        for path in (repo / "results").rglob("*")
        if path.is_file() and path.name != ".snakemake_timestamp"
        and not path.is_relative_to(repo / "results/reference") and not path.is_relative_to(repo / "results/benchmarks")
    }  # fmt: skip
    undeclared = sorted(str(p.relative_to(repo)) for p in written - files if not any(p.is_relative_to(d) for d in dirs))
    assert not undeclared, f"written but declared by no rule: {undeclared}"
    assert not [p for p in files if not p.exists()], "declared but not written"
    assert {p.name for p in files if p.parent.name == "figures"} == {
        f"{n}.{s}" for n in FIGURES for s in ("png", "pdf")
    }


@pytest.mark.slow
def test_figures_target_needs_only_the_table(
    study: tuple[Path, subprocess.CompletedProcess, float], tmp_path: Path
) -> None:
    """A fresh clone holding only the committed trajectory table: `figures` draws without training, into
    results/redrawn/, and leaves the committed reference's files alone."""
    repo = copy_workflow(tmp_path / "fresh")
    (repo / "results/reference/test").mkdir(parents=True)
    shutil.copy2(
        study[0] / "results/studies/test/trajectories.csv.gz", repo / "results/reference/test/trajectories.csv.gz"
    )
    result = snakemake(repo, "figures", "--cores", "1", "--configfile", ".test/config/config.yaml")
    assert result.returncode == 0, result.stdout
    assert job_counts(result.stdout) == {"draw_figures_reference": 1, "write_tables_reference": 1, "figures": 1}
    for name in FIGURES:
        assert (repo / f"results/redrawn/test/figures/{name}.png").stat().st_size > 0, name
    for name in TABLES:
        assert (repo / f"results/redrawn/test/tables/{name}").stat().st_size > 0, name
    assert [p.name for p in (repo / "results/reference/test").iterdir()] == ["trajectories.csv.gz"]
    # the per-run records went with the runs, not with this table: the per-item frontier is not planned
    assert not (repo / "results/redrawn/test/tables/frontier.csv").exists()

    figure = repo / "results/redrawn/test/figures/fig2_kto_kl.png"
    drawn = figure.read_bytes()
    figure.unlink()  # a declared file: deleting it makes its rule run again, and nothing else
    again = snakemake(repo, "figures", "--cores", "1", "--configfile", ".test/config/config.yaml")
    assert again.returncode == 0, again.stdout
    assert job_counts(again.stdout) == {"draw_figures_reference": 1, "figures": 1}
    assert figure.read_bytes() == drawn


@pytest.mark.slow
def test_slurm_profile_with_standins(study: tuple[Path, subprocess.CompletedProcess, float], tmp_path: Path) -> None:
    """profiles/slurm: every job goes through sbatch; the training job asks for 4 GPUs as one task (accelerate
    spawns the 4 ranks inside it, here on the CPU) on the GPU partition, nothing else asks for a GPU."""
    repo = repo_with_data(study[0], tmp_path / "repo")
    state = tmp_path / "slurm"
    path = os.pathsep.join([str(STANDINS), str(BIN), os.environ.get("PATH", "")])
    gpu = write_yaml(repo / "gpu.yaml", {"resources": {"gpu": 4, "cpus_per_gpu": 2, "partition": "gpu"}})
    result = snakemake(
        repo,
        "--profile", "profiles/slurm",
        "--configfile", ".test/config/config.yaml", gpu,
        "--jobs", "2",
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "1",
        "--latency-wait", "5",
        env=_env(PATH=path, KTOS_STANDIN_DIR=str(state)),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    check_outputs(repo)

    calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
    submissions = [c["argv"] for c in calls if c["tool"] == "sbatch"]
    by_rule: dict[str, list[list[str]]] = {}
    for argv in submissions:
        rule = argv[argv.index("--comment") + 1].split("_wildcards_")[0].removeprefix("rule_")
        by_rule.setdefault("train" if rule.startswith("train_") else rule, []).append(argv)
    assert sorted(by_rule) == ["draw_figures_studies", "extract_kl", "pretrain_base", "train", "write_tables_studies"]
    assert len(by_rule["train"]) == len(TEST_BASES)  # one job per base, its two runs in it
    train = by_rule["train"][0]
    assert "--gpus=4" in train and "--cpus-per-gpu=2" in train, train
    assert not any(a.startswith(("--ntasks", "--nodes")) for a in train), train  # SLURM's default: one task
    for rule, argvs in by_rule.items():
        for argv in argvs:
            asks_gpu = any(a.startswith(("--gpus", "--gres=gpu")) for a in argv)
            assert asks_gpu == (rule == "train"), (rule, argv)
            assert argv[argv.index("-p") + 1] == ("gpu" if rule == "train" else "cpu"), (rule, argv)
            assert "-t" in argv and "--mem" in argv, (rule, argv)
            assert rule == "train" or "--ntasks=1" in argv, (rule, argv)
    info = json.loads((repo / TEST_RUNS[0] / "run_info.json").read_text())
    assert info["status"] == "completed" and info["num_processes"] == 4  # accelerate launched 4 ranks
    # Inside each allocation the job step is started with srun.
    assert sum(c["tool"] == "srun" for c in calls) == len(submissions)


@pytest.mark.slow
def test_killed_training_resumes_from_checkpoint(
    study: tuple[Path, subprocess.CompletedProcess, float], tmp_path: Path
) -> None:
    """Kill the workflow once a training run has written a checkpoint; a rerun resumes and finishes it."""
    repo = repo_with_data(study[0], tmp_path / "repo")
    run_dir = repo / f"results/runs/test/main/{TEST_BASES[0]}/kto_s_lr0.001_seed0"
    overlay = write_yaml(repo / "resume.yaml", {"methods": ["kto_s"], "train": {"max_steps": 40, "save_steps": 4}})
    args = (
        "--cores",
        "2",
        "--configfile",
        ".test/config/config.yaml",
        overlay,
        "--",
        f"{run_dir.relative_to(repo)}/run_info.json",
    )
    first_log = tmp_path / "first_attempt.log"
    with first_log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=repo,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while not any(run_dir.glob("checkpoint-*/trainer_state.json")):
                assert proc.poll() is None, first_log.read_text()
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole workflow, training job included
            proc.wait()
    assert not (run_dir / "model.safetensors").exists()  # killed before the end

    # A hard kill leaves the working directory locked, as after a power cut: unlock, then rerun.
    assert snakemake(repo, "--unlock", *args).returncode == 0
    rerun = snakemake(repo, "--rerun-incomplete", *args)
    assert rerun.returncode == 0, rerun.stdout
    log = (repo / f"results/logs/train/test/main_{TEST_BASES[0]}_0.log").read_text()
    assert "resuming from" in log, log
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "completed" and info["resumed_from"], info
    steps = [json.loads(line)["step"] for line in (run_dir / "trajectory.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41)), steps
