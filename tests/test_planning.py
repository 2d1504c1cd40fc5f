"""The workflow's job planning (ktos.study.plan.planning, ktos.study.plan.outputs), unit by unit, on configs read and
validated as Snakemake reads them (config/config.yaml, then an overlay; the schema's defaults filled in)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from snakemake.utils import update_config, validate

from ktos.runnames import parse_run_name
from ktos.study.plan.outputs import FIGURES, Outputs
from ktos.study.plan.planning import ConfigError, Plan

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "workflow/schemas/config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_FILE.read_text())
#: The committed studies: those with figures under results/reference/.
STUDIES = sorted(p.name for p in (ROOT / "results/reference").iterdir() if (p / "figures").is_dir())


def plan_of(*overlays: str | dict[str, Any], root: Path = ROOT) -> Plan:
    """The plan of config/config.yaml with ``overlays`` (config files under the repository, or mappings) on top."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    for overlay in overlays:
        update_config(config, yaml.safe_load((ROOT / overlay).read_text()) if isinstance(overlay, str) else overlay)
    validate(config, str(SCHEMA_FILE), set_default=True)
    return Plan(config, SCHEMA, root)


def study_plan(study: str) -> Plan:
    """The plan of a committed study (config/<study>.yaml; main is config/config.yaml alone)."""
    return plan_of() if study == "main" else plan_of(f"config/{study}.yaml")


# ------------------------------------------------------------------------------------------------ training


def test_every_run_is_in_one_job_from_its_committed_base() -> None:
    plan = plan_of({"resources": {"runs_per_job": 5}})
    jobs = plan.train_jobs
    runs = [run for *_, dirs in jobs.values() for run in dirs]
    config = plan.config
    assert len(runs) == len(set(runs)) == 5 * len(config["seeds"]) * len(config["methods"])
    assert all(0 < len(dirs) <= 5 for *_, dirs in jobs.values())
    for name, (regime, model, dirs) in jobs.items():
        assert name.startswith(f"{regime}_{Path(model).name}_") and Path(model).is_relative_to(ROOT), name
        assert all(d.startswith(f"results/runs/main/{regime}/{Path(model).name}/") for d in dirs)
        seeds = [parse_run_name(Path(d).name).seed for d in dirs]
        assert seeds == sorted(seeds), "a seed's runs are contiguous"
    assert plan.pretrained_bases == {}
    assert plan.run_files("run_info.json") == [f"{r}/run_info.json" for r in runs]


def test_rebuilt_bases_are_pretrained_and_compared_with_the_committed_copy() -> None:
    plan = plan_of({"synthetic": {"bases": "rebuild", "base_seeds": [0, 7]}})
    assert plan.pretrained_bases == {"0.09M_seed0": ("0.09M", 0), "0.09M_seed7": ("0.09M", 7)}
    assert plan.reference_flag("0.09M_seed0") == f"--reference {ROOT}/results/reference/bases/0.09M_seed0"
    assert plan.reference_flag("0.09M_seed7") == ""  # no committed base of that seed
    assert set(plan.bases(plan.regime_names[0]).values()) == {
        f"results/models/bases/{b}" for b in plan.pretrained_bases
    }


def test_a_configured_model_is_every_runs_base() -> None:
    plan = plan_of({"model": {"name_or_path": str(ROOT)}, "seeds": [1]})
    ((regime, model, runs),) = plan.train_jobs.values()
    assert model == str(ROOT) and plan.pretrained_bases == {}
    assert runs == [
        f"results/runs/main/{regime}/kto_lr0.00027_seed1",
        f"results/runs/main/{regime}/kto_s_lr0.00027_seed1",
    ]


def test_data_tag_names_the_data_settings_only() -> None:
    assert plan_of().data_tag == "default"
    assert plan_of({"train": {"beta": 0.5, "max_steps": 3}}).data_tag == "default"  # not a data setting
    tags = {plan_of({"data": {"eval_fraction": f}}).data_tag for f in (0.2, 0.3)}
    assert len(tags) == 2 and all(t.startswith("d") and len(t) == 9 for t in tags)


def test_train_settings_apply_the_regime_and_write_numbers_as_floats() -> None:
    plan = plan_of(
        {
            "regimes": [{"name": "long", "max_steps": 30, "beta": 1, "learning_rates": [1e-3]}],
            "headline": {"lr": 1e-3},
            "train": {"quality_steps": [10, 20, 40], "extra_args": {"max_length": 64}},
            "model": {"peft": {"use_peft": True, "lora_target_modules": ["q_proj"]}},
        }
    )
    settings = plan.train_settings("long", "heldout.jsonl")
    assert settings["max_steps"] == 30 and settings["beta"] == 1.0 and isinstance(settings["beta"], float)
    assert settings["quality_steps"] == [10, 20]  # below max_steps
    assert settings["heldout"] == "heldout.jsonl" and settings["regime"] == "long" and settings["max_length"] == 64
    assert settings["use_peft"] is True and settings["lora_target_modules"] == ["q_proj"]
    assert not {"name", "learning_rates", "num_processes", "extra_args"} & set(settings)
    assert isinstance(settings["warmup_steps"], float) and isinstance(settings["save_steps"], int)


def test_several_gpus_launch_one_process_each() -> None:
    one = plan_of()
    assert one.train_launcher == "python -m ktos train" and one.train_resources == {
        "gpu": 0,
        "mem_mb": 4000,
        "runtime": 60,
    }
    gpus = plan_of({"resources": {"gpu": 4, "gpu_model": "a100", "partition": "gpu"}})
    assert gpus.train_processes == 4 and "--num_processes 4 -m ktos train" in gpus.train_launcher
    assert gpus.train_resources == {
        "gpu": 4,
        "mem_mb": 4000,
        "runtime": 60,
        "gpu_model": "a100",
        "slurm_partition": "gpu",
    }


def test_a_training_job_needs_its_seeds_data_and_its_base(tmp_path: Path) -> None:
    plan = plan_of()
    files = {"train": "b/seed{seed}/data.jsonl", "balance_manifest": "b/seed{seed}/m.json", "eval": "e", "heldout": "h"}
    runs = ["r/kto_lr0.1_seed3", "r/kto_s_lr0.1_seed3", "r/kto_lr0.1_seed12"]
    inputs = plan.train_input("results/models/bases/x", runs, files)
    assert inputs["train"] == ["b/seed3/data.jsonl", "b/seed12/data.jsonl"]
    assert inputs["model"] == "results/models/bases/x" and inputs["heldout"] == "h" and inputs["eval"] == "e"
    hub = plan_of({"data": {"source": str(tmp_path)}, "model": {"name_or_path": "org/model"}})
    assert "model" not in hub.train_input("org/model", runs, files)  # a hub id is no input file
    assert "heldout" not in hub.train_input("org/model", runs, files)
    assert hub.prepare_input("synthetic.jsonl") == {"source": str(tmp_path)}


# ------------------------------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("overlay", "key"),
    [
        ({"analysis": {"phase_end": 200}}, "analysis.phase_end"),
        ({"analysis": {"window": 151}}, "analysis.window"),
        ({"headline": {"lr": 1e-3}}, "headline.lr"),
        ({"headline": {"regime": "nope"}}, "headline.regime"),
        ({"synthetic": {"desirable": 1000}}, "synthetic.desirable"),
        ({"regimes": [{"name": "a"}, {"name": "a"}]}, "regimes"),
        ({"data": {"source": "data/missing.jsonl"}, "model": {"name_or_path": "org/m"}}, "data.source"),
        ({"model": {"name_or_path": "org/m"}, "regimes": [{"name": "a", "model_size": "1M"}]}, "regimes"),
    ],
)
def test_check_refuses_what_cannot_run(overlay: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan_of(overlay).check()


def test_every_committed_config_passes_the_checks_and_a_hub_id_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    for config in sorted((ROOT / "config").glob("*.yaml")):
        if config.name != "paper.yaml":  # its data file is not committed
            plan_of(str(config.relative_to(ROOT))).check()
    with caplog.at_level(logging.WARNING):
        plan_of({"data": {"source": "org/dataset"}, "model": {"name_or_path": "org/model"}}).check()
    assert "hub id" in caplog.text and "org/model" in caplog.text


# ------------------------------------------------------------------------------------------------ outputs


@pytest.mark.parametrize("study", STUDIES)
def test_planned_figures_and_tables_are_the_committed_ones(study: str) -> None:
    """The plan of a committed reference names exactly its committed figures and tables, none of them empty
    (tests/test_references.py redraws them and compares the bytes)."""
    outputs = Outputs(study_plan(study))
    committed = ROOT / f"results/reference/{study}"
    assert {p.stem for p in (committed / "figures").glob("*.png")} == set(outputs.figure_names("reference"))
    assert {p.stem for p in (committed / "tables").glob("*.csv")} == set(outputs.table_names("reference"))
    assert all(p.read_text().strip() for p in (committed / "tables").glob("*.csv")), "an empty committed table"
    files = outputs.table_files("reference")
    assert files[0] == f"results/redrawn/{study}/tables/verdict.md"
    assert len(files) == len(outputs.table_names("reference")) + 1


def test_the_matched_frontier_is_planned_only_where_the_data_can_make_it(tmp_path: Path) -> None:
    """Over two KTO learning rates with task accuracy along the way, this workflow's runs make the matched-KL
    frontier; a committed table whose records lack each item's outcome (lr_grid's predate them) does not."""
    two = {"synthetic": {"base_seeds": [0]}, "learning_rates": [1.0e-4, 2.7e-4]}
    assert Outputs(plan_of(two)).item_frontier("studies")
    assert not Outputs(plan_of({"synthetic": {"base_seeds": [0]}})).item_frontier("studies")  # one lr
    assert not Outputs(plan_of(two, {"methods": ["kto"]})).item_frontier("studies")  # nothing to compare
    lr_grid = Outputs(study_plan("lr_grid"))
    assert lr_grid.item_frontier("studies") and not lr_grid.item_frontier("reference")
    assert "best_checkpoint" in lr_grid.table_names("studies")
    assert "best_checkpoint" not in lr_grid.table_names("reference")
    assert Outputs(study_plan("frontier")).item_frontier("reference")
    assert "curve_frontier" in Outputs(study_plan("frontier_curve")).table_names("reference")
    assert "curve_frontier" not in Outputs(study_plan("frontier")).table_names("reference")
    moved = Outputs(plan_of(two, {"study": "elsewhere"}, root=tmp_path))  # no committed table: nothing from it
    assert not moved.item_frontier("reference") and moved.run_info("reference") is None


def test_the_committed_table_is_read_from_the_workflows_repository() -> None:
    """Absolute paths under the workflow's repository, so that the workflow used as a module finds them."""
    outputs = Outputs(study_plan("lr_grid"))
    assert outputs.figure_table("reference") == f"{ROOT}/results/reference/lr_grid/trajectories.csv.gz"
    assert outputs.run_info("reference") == f"{ROOT}/results/reference/lr_grid/run_info.jsonl.gz"
    assert outputs.output_dir("reference") == "results/redrawn/lr_grid"
    assert outputs.output_dir("studies") == "results/studies/lr_grid"


def test_figure_names_follow_the_config() -> None:
    base = {"synthetic": {"base_seeds": [0]}}
    assert Outputs(plan_of(base)).figure_names("studies") == ["fig2_kto_kl", "fig3_kto_s_kl", "paired", "companion",
                                                              "envelope", "kl_relation"]  # fmt: skip
    assert "kl_relation" not in Outputs(plan_of(base, {"train": {"policy_kl_size": 0}})).figure_names("studies")
    two = Outputs(plan_of(base, {"learning_rates": [1.0e-4, 2.7e-4]})).figure_names("studies")
    assert two[-3:] == ["envelope", "matched_frontier", "kl_relation"]  # one base: no interval over bases to read
    several = Outputs(plan_of({"learning_rates": [1.0e-4, 2.7e-4]})).figure_names("studies")
    assert "curve_frontier" in several and "envelope" not in several
    assert "curve_frontier" in Outputs(study_plan("frontier_curve")).figure_names("reference")
    assert "curve_frontier" not in Outputs(study_plan("frontier")).figure_names("reference")  # no policy KL there
    assert "envelope" not in Outputs(plan_of()).figure_names("studies")  # several bases: an envelope per base
    search = Outputs(study_plan("regime_search")).figure_names("studies")
    assert search == ["fig2_kto_kl", "companion", "regime_search", "regime_trajectories", "kl_relation"]
    unmeasured = Outputs(plan_of(base, {"train": {"quality_steps": [150]}})).figure_names("studies")
    assert not {"envelope", "matched_frontier"} & set(unmeasured)  # no task accuracy along the way
    assert set(Outputs(study_plan("scale")).figure_names("studies")) >= {"frontier", "paired_regimes", "scale"}
    assert all(set(Outputs(study_plan(s)).figure_names("reference")) <= set(FIGURES) for s in STUDIES)


def test_analysis_flags_carry_the_config() -> None:
    flags = Outputs(study_plan("scale_2.6M")).analysis_flags
    assert "--regime size2.6M --lr 0.00027 " in flags and "--window 20 " in flags and "--phase-end 40 " in flags
    assert f"--predictions {ROOT}/results/reference/scale/predictions/third_amendment_null.csv" in flags
    assert "--checkpoints 5 10 15 20" in flags and "--seed-sets" not in flags
    arms = Outputs(study_plan("mechanisms")).analysis_flags
    assert "--arms 'noclip=gradient clipping off' 'sgd=plain SGD instead of AdamW'" in arms
    assert "--phase-end" not in Outputs(study_plan("short")).analysis_flags  # null: left out


def test_the_2_6m_check_reads_the_frozen_predictions_with_their_null() -> None:
    """third_amendment_null.csv is the frozen third_amendment.csv, digit for digit, with one column more: the
    no-growth null, the 1.1M seed-0 cell of the committed size sweep (the cells the frozen fit was made from)."""
    folder = ROOT / "results/reference/scale/predictions"
    frozen = (folder / "third_amendment.csv").read_text().splitlines()
    with_null = (folder / "third_amendment_null.csv").read_text().splitlines()
    assert [line.rsplit(",", 1)[0] for line in with_null] == frozen
    cells = pd.read_csv(ROOT / "results/reference/scale/tables/scale.csv")
    largest = cells[(cells["base"] == "1M_seed0")].set_index(["method", "lr"])["final_probe_kl"]
    nulls = pd.read_csv(folder / "third_amendment_null.csv")
    for row in nulls.itertuples():
        assert row.null_final_probe_kl == pytest.approx(largest[(row.method, row.lr)], rel=1e-6)
    assert Outputs(study_plan("scale_2.6M")).analysis_flags.count("third_amendment_null.csv") == 1
