"""Glue of the ktos workflow: the study's plan (ktos.study.plan.planning, where every planning decision is made and
unit tested), its config checks at parse time, and the paths the rules share.

Nothing here decides what runs: these names only hand Snakemake's rules and wildcards to the plan.
"""

from pathlib import Path

import yaml

from snakemake.exceptions import WorkflowError

from ktos.study.plan.outputs import Outputs
from ktos.study.plan.planning import ORIGINS, ConfigError, Plan

#: This workflow's directory (workflow/): current_basedir, not basedir, so that it is this repository's when
#: another workflow uses it as a module.
WORKFLOW_DIR = Path(workflow.current_basedir).parent
#: The study's plan: the validated config, the config's JSON schema (each key's one default) and the
#: workflow's repository root.
PLAN = Plan(
    config,
    yaml.safe_load((WORKFLOW_DIR / "schemas/config.schema.yaml").read_text()),
    WORKFLOW_DIR.parent,
)
try:
    PLAN.check()
except ConfigError as error:
    raise WorkflowError(str(error)) from None

DATA_TAG = PLAN.data_tag
DATA = f"results/data/{DATA_TAG}"
#: The study's figures, tables and analysis flags.
OUTPUTS = Outputs(PLAN)
STUDY_DIR = OUTPUTS.output_dir("studies")
TRAIN_JOBS = PLAN.train_jobs
PRETRAINED_BASES = PLAN.pretrained_bases


def input_dir(key):
    """A params function: the directory holding input file `key` (a dataset dir, a run dir)."""
    return lambda wildcards, input: Path(input[key]).parent


def output_dir(key):
    """A params function: the directory holding output file `key`."""
    return lambda wildcards, output: Path(output[key]).parent


def write_yaml(path, mapping, log):
    """Write `mapping` to `path` as YAML, in its order; say so in `log`."""
    Path(path).write_text(yaml.safe_dump(mapping, sort_keys=False))
    Path(log).write_text(f"wrote {path}\n")


def run_info_flag(wildcards, input):
    """`--run-info` with the runs' records, when the rule has them (per-item readings)."""
    return f"--run-info {input.run_info}" if input.run_info else ""
