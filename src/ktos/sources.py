"""Telling a local data path from a hub dataset id (standard library only).

Kept free of heavy imports so that the Snakemake workflow can check its config at parse time with
the same rule ``ktos prepare`` applies, whatever environment Snakemake itself runs in.
"""

from __future__ import annotations

import os

JSON_SUFFIXES: tuple[str, ...] = (".jsonl", ".json")
CSV_SUFFIXES: tuple[str, ...] = (".csv", ".tsv")
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")


def looks_like_path(source: str) -> bool:
    """Whether ``source``, when it does not exist, is meant as a local path rather than a hub id.

    A path prefix (``.``, ``/``, ``~``), more than one ``/``, the OS separator, or a data-file
    ending (JSON, CSV, Parquet) makes it a path; ``org/name`` reads as a hub id.
    """
    return (
        source.startswith((".", "/", "~"))
        or source.count("/") > 1
        or (os.sep != "/" and os.sep in source)
        or source.lower().endswith(JSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES)
    )
