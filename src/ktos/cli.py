"""The ``ktos`` command line: one subcommand per pipeline stage, argument parsing and nothing else.

``ktos train`` hands its arguments to the study's driver (:func:`ktos.runs.command.train_runs`), which parses
them with TRL's ``TrlParser``: every ``KTOConfig`` field works from the command line and from YAML, and
unknown keys are refused.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("ktos")

#: Exit status for invalid input data and usage errors (unknown keys; the message is one line on stderr).
EXIT_BAD_DATA = 2


#: Stage subcommands: name -> (module, function, help). Each flag's ``dest`` is the function's parameter
#: name and absent flags are left out, so the library's defaults are the CLI's.
STAGES: dict[str, tuple[str, str, str]] = {
    "synth-data": (
        "toy.task",
        "synth_data",
        "write the embedded default's synthetic feedback data, corpus and held-out set",
    ),
    "pretrain-base": ("toy.pretrain", "pretrain_base", "pretrain the embedded default's tiny base model on the corpus"),
    "prepare": ("data_stages", "prepare", "load and validate binary-feedback data into a dataset dir"),
    "split": ("data_stages", "split", "stratified, seeded train/eval split of a dataset dir"),
    "balance": ("balance", "balance", "order/subsample the training set and compute class weights"),
    "extract-kl": (
        "study.readings.rundir",
        "extract",
        "collect run dirs' per-step trajectories into one tidy CSV table",
    ),
    "figures": (
        "study.report.figures",
        "draw_all",
        "draw Figures 2, 3 and the study's other figures from a trajectory table",
    ),
    "tables": (
        "study.report.verdict",
        "write_tables",
        "write the study's tables and the computed verdict from a trajectory table",
    ),
    "power": (
        "study.readings.power",
        "write_power",
        "power analysis of the matched-KL frontier from a committed frontier study",
    ),
    "answer": (
        "study.report.prose.answer",
        "write_answer",
        "the README's answer block from the committed studies' tables",
    ),
}


class KeyValues(argparse.Action):
    """``NAME=TEXT ...`` -> ``{NAME: TEXT}``."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        pairs = [value.partition("=") for value in values]
        if not all(name and sep for name, sep, _ in pairs):
            parser.error(f"{option}: each value must be NAME=TEXT, got {values}")
        setattr(namespace, self.dest, {name: text for name, _, text in pairs})


def _stage_commands(sub: argparse._SubParsersAction) -> None:
    parsers = {
        name: sub.add_parser(name, help=helptext, argument_default=argparse.SUPPRESS)
        for name, (_, _, helptext) in STAGES.items()
    }
    p = parsers["synth-data"]
    p.add_argument("--output", dest="out_dir", required=True)
    p.add_argument("--seed", type=int)
    p.add_argument("--rows", type=int)
    p.add_argument("--desirable", type=int)
    p.add_argument("--heldout", type=int)

    p = parsers["pretrain-base"]
    p.add_argument("--corpus", dest="corpus_path", required=True)
    p.add_argument("--output", dest="out_dir", required=True)
    p.add_argument("--size", help="named base-model size (ktos.toy.pretrain.SIZES: 0.09M, 0.3M, 1M, 2.6M, 21M, 105M)")
    p.add_argument("--hidden-size", type=int, help="override the size's hidden width")
    p.add_argument("--num-layers", type=int, help="override the size's layer count")
    p.add_argument("--num-heads", type=int, help="override the size's attention heads")
    p.add_argument("--lr", type=float, help="override the size's peak pretraining learning rate")
    p.add_argument("--batch-size", type=int, help="lines per step (default 64)")
    p.add_argument("--device", help="cpu, cuda, ... (default: a GPU when there is one)")
    p.add_argument("--heldout", help="held-out items (heldout.jsonl): the base model's task accuracy is recorded")
    p.add_argument(
        "--reference", help="a committed base this rebuilds: the log says whether the rebuild equals it bit for bit"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--max-seconds", type=float)

    p = parsers["prepare"]
    p.add_argument(
        "--input", dest="source", required=True, help="JSONL, CSV, Parquet, save_to_disk folder, dataset dir or hub id"
    )
    p.add_argument("--output", dest="out_dir", required=True)
    p.add_argument("--split", help="split to read from a dataset dict or hub dataset")

    p = parsers["split"]
    p.add_argument("--input", dest="in_dir", required=True)
    p.add_argument("--output", dest="out_dir", required=True)
    p.add_argument("--eval-fraction", type=float)
    p.add_argument("--seed", type=int)

    p = parsers["balance"]
    p.add_argument("--input", dest="in_dir", required=True)
    p.add_argument("--output", dest="out_dir", required=True)
    p.add_argument("--strategy", choices=("none", "subset", "interleave"), required=True)
    p.add_argument("--batch-size", type=int, required=True, help="per-device train batch size")
    p.add_argument("--seed", type=int)

    p = parsers["extract-kl"]
    p.add_argument("--runs", dest="run_dirs", nargs="+", required=True)
    p.add_argument("--output", dest="out_csv", required=True, help="CSV (.csv.gz: compressed)")
    p.add_argument("--run-info", dest="run_info_out", help="also collect every run_info.json into this JSON Lines file")

    for name in ("figures", "tables"):
        p = parsers[name]
        p.add_argument(
            "--table", dest="table_csv", required=True, help="tidy trajectory CSV written by `ktos extract-kl`"
        )
        p.add_argument("--output", dest="out_dir", required=True)
        p.add_argument("--regime", help="regime of the headline cell (Figures 2 and 3, the verdict)")
        p.add_argument("--lr", type=float, help="learning rate of the headline cell")
        p.add_argument("--threshold", type=float, help="probe-KL threshold tau, sequence-level nats (docs/study.md)")
        p.add_argument("--window", type=int, help="last step of the stability window")
        p.add_argument("--margin", type=float, help="equivalence margin, a fraction of KTO's mean")
        p.add_argument("--phase-end", type=int, help="last step of the phase in which KTO's KL runs away")
        p.add_argument("--checkpoints", type=int, nargs="+", help="steps marked in Figures 2 and 3 and tabulated")
        p.add_argument("--beta", type=float, help="β of the notes' claims and of the headline rule's first choice")
        p.add_argument("--search-steps", type=int, help="run length whose cells the headline rule picks from")
        p.add_argument(
            "--arms", nargs="+", action=KeyValues, metavar="REGIME=TEXT", help="mechanism arms and what each changes"
        )
        p.add_argument(
            "--seed-sets", nargs="+", action=KeyValues, metavar="NAME=SEEDS",
            help="two seed sets (3-12 or 3,5,7) compared on each base: base against seed",
        )  # fmt: skip
        p.add_argument("--predictions", help="a size_predictions.csv made before these runs, to compare them with")
        p.add_argument(
            "--run-info", dest="run_info", help="the runs' records (`ktos extract-kl --run-info`): per-item readings"
        )
        p.add_argument(
            "--names", nargs="+", help=f"make exactly these {name} (the workflow's plan; default: all the data allow)"
        )

    p = parsers["power"]
    p.add_argument("--trajectories", required=True, help="the frontier study's trajectories.csv(.gz)")
    p.add_argument("--run-info", dest="run_info", required=True, help="its run_info.jsonl(.gz), per-item outcomes")
    p.add_argument("--frontier", required=True, help="its committed frontier.csv (the argmax design's bootstrap)")
    p.add_argument("--output", dest="out_dir", required=True)
    p.add_argument("--regime")

    p = parsers["answer"]
    p.add_argument("--reference", required=True, help="the committed studies (results/reference)")
    p.add_argument("--output", required=True, help="the Markdown file to write")


def _run_stage(args: argparse.Namespace) -> Any:
    module, function, _ = STAGES[args.command]
    kwargs = {k: v for k, v in vars(args).items() if k not in ("command", "log_level")}
    result = getattr(importlib.import_module(f"ktos.{module}"), function)(**kwargs)
    if isinstance(result, list):
        return {"written": [str(p) for p in result]}
    return result if isinstance(result, dict) else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ktos",
        description="KTO and KTO-S from a base model: one subcommand per pipeline stage.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="ktos's and its libraries' level (default: ktos INFO, the libraries their own defaults, as trl does; "
        "ktos train also honours TRL's --log_level)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("train", help="train KTO or KTO-S (ktos train --help lists every KTOConfig field)", add_help=False)
    _stage_commands(sub)
    return parser


def configure_logging(level: str | None) -> None:
    """ktos's own messages at ``level`` (INFO when ``None``). A given ``level`` also goes to the libraries ktos drives:
    transformers and datasets (their own verbosity, through the environment variables they read at import and,
    when already imported, their setters), TRL and accelerate (standard loggers); with ``None`` they keep their own
    defaults (warnings), as under ``trl kto``."""
    logging.basicConfig(
        level=level or logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    log.setLevel(level or logging.INFO)
    if level is None:
        return
    for library in ("transformers", "datasets"):
        os.environ[f"{library.upper()}_VERBOSITY"] = level.lower()
        if library in sys.modules:
            importlib.import_module(f"{library}.utils.logging").set_verbosity(logging.getLevelName(level))
    for name in ("trl", "accelerate"):
        logging.getLogger(name).setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ktos`` console script and ``python -m ktos``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = build_parser().parse_known_args(argv)
    configure_logging(args.log_level)
    from .data import DataValidationError

    try:
        if args.command == "train":
            from .runs.command import UsageError, train_runs
            from .toy.quality import TASK  # the front end hands the toy's task accuracy to the library

            try:
                return train_runs(rest, task=TASK)
            except UsageError as err:
                print(err, file=sys.stderr)
                return err.code if isinstance(err.code, int) else EXIT_BAD_DATA
        if rest:
            build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
        result = _run_stage(args)
    except (DataValidationError, FileNotFoundError) as err:
        print(f"ktos {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_DATA
    if isinstance(result, dict):
        summary = {k: v for k, v in result.items() if not isinstance(v, list) or k == "written"}
        log.info("%s: %s", args.command, json.dumps(summary, default=str))
    return 0
