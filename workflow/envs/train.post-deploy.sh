#!/usr/bin/env bash
# Run by Snakemake once it has built this environment (--sdm conda): installs this workflow's own ktos, from
# the repository this script lies in (two levels up), without dependencies (the environment file pins them).
# Not editable: the environment keeps the ktos it was built from; after changing src/ktos, delete
# .snakemake/conda to rebuild it. A workflow used as a module from a remote source has no repository here:
# deploy a local clone instead (docs/pipeline.md).
set -euo pipefail
source_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ ! -f "$source_dir/pyproject.toml" ]]; then
    echo "post-deploy: no ktos source at $source_dir (use a local clone of the workflow)" >&2
    exit 1
fi
python -m pip install --no-deps "$source_dir"
