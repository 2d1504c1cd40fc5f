#!/usr/bin/env bash
# Run by Snakemake once it has built this environment (--sdm conda): installs ktos itself, without
# dependencies (the environment file pins them), from KTOS_SOURCE, which workflow/Snakefile sets to the
# checkout the workflow runs from. Editable, so the environment runs the checkout's current code.
set -euo pipefail
python -m pip install --no-deps --editable "${KTOS_SOURCE:?KTOS_SOURCE is set by workflow/Snakefile}"
