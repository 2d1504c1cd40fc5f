"""KTO vs KTO-S trained from a base model with no SFT: the ktos study as a Snakemake workflow.

    snakemake --profile profiles/default                     # embedded default (CPU, offline)
    snakemake --profile profiles/default --configfile config/paper.yaml
    snakemake --profile profiles/default figures             # redraw from the committed table

See config/README.md for every config key and profiles/README.md for SLURM.
"""

import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# Jobs run `python -m ktos`: from the installed package, or under --sdm conda from this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH")])
)
# The config checks use ktos.sources (standard library only), from this checkout.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))


envvars:
    "PYTHONPATH",


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml", set_default=True)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    seed=r"[0-9]+",
    origin="|".join(ORIGINS),
    size=r"[0-9.]+[kM]",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/kl.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        expand(
            [*rules.draw_figures.output, *rules.write_tables.output],
            origin="studies",
        ),
        rules.extract_kl.output,
    localrule: True


rule figures:
    input:
        expand(
            [*rules.draw_figures.output, *rules.write_tables.output],
            origin="reference",
        ),
    localrule: True
