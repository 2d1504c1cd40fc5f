"""The ``ktos`` command line: one subcommand per pipeline stage, argument parsing and nothing else.

``ktos train`` parses TRL's ``ModelConfig``, :class:`~ktos.run.RunArguments`, :class:`~ktos.run.DataArguments`
and :class:`~ktos.trainer.KTOSConfig` with TRL's ``TrlParser``, from ``--config FILE.yaml`` (or
``--config=FILE.yaml``) and/or flags (flags win), so every ``KTOConfig`` field works from the command
line and from YAML, and unknown keys are refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("ktos")

#: Exit status for invalid input data (the message is one line on stderr).
EXIT_BAD_DATA = 2


def normalise_config_flag(argv: Sequence[str]) -> list[str]:
    """``--config=FILE`` -> ``--config FILE`` (TRL's parser reads the spaced form only); one ``--config`` at most."""
    out: list[str] = []
    for arg in argv:
        out.extend(["--config", arg.split("=", 1)[1]] if arg.startswith("--config=") else [arg])
    if out.count("--config") > 1:
        raise SystemExit("ktos train: error: --config given more than once")
    if out and out[-1] == "--config":
        raise SystemExit("ktos train: error: --config needs a YAML file")
    return out


def parse_train_args(argv: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """``(ModelConfig, RunArguments, DataArguments, KTOSConfig)`` from flags and ``--config FILE.yaml``, through TRL's
    ``TrlParser``: the file's values replace the defaults, flags win over the file, and an unknown key in
    either raises ``SystemExit`` naming it."""
    from trl import ModelConfig, TrlParser

    from .run import DataArguments, RunArguments
    from .trainer import KTOSConfig

    parser = TrlParser((ModelConfig, RunArguments, DataArguments, KTOSConfig), prog="ktos train")
    parser.add_argument("--config", metavar="FILE", help="YAML file of arguments (flags given on the command line win)")
    try:
        parsed = parser.parse_args_and_config(args=normalise_config_flag(argv))
    except (ValueError, OSError) as err:
        raise SystemExit(f"ktos train: error: {err}") from None
    return parsed[0], parsed[1], parsed[2], parsed[3]


def _train(argv: list[str]) -> int:
    from .run import train

    train(*parse_train_args(argv))
    return 0


def _stage_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth-data", help="write the embedded default's synthetic feedback data and corpus")
    p.add_argument("--output", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--desirable", type=int, default=746)
    p.add_argument("--heldout", type=int, default=200)

    p = sub.add_parser("pretrain-base", help="pretrain the embedded default's tiny base model on the corpus")
    p.add_argument("--corpus", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None)

    p = sub.add_parser("prepare", help="load and validate binary-feedback data into a dataset dir")
    p.add_argument("--input", required=True, help="JSONL, CSV, Parquet, save_to_disk folder, dataset dir or hub id")
    p.add_argument("--output", required=True)
    p.add_argument("--split", default="train", help="split to read from a dataset dict or hub dataset")

    p = sub.add_parser("split", help="stratified, seeded train/eval split of a dataset dir")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--eval-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("balance", help="order/subsample the training set and compute class weights")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--strategy", choices=("none", "subset", "interleave"), required=True)
    p.add_argument("--batch-size", type=int, required=True, help="per-device train batch size")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("extract-kl", help="collect run dirs' per-step trajectories into one tidy CSV table")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--output", required=True)

    for name, helptext in (
        ("figures", "draw Figures 2, 3 and their companions from a trajectory table"),
        ("tables", "write the KL checkpoint table, stability map, frontier and verdict from a trajectory table"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--table", required=True, help="tidy trajectory CSV written by `ktos extract-kl`")
        p.add_argument("--output", required=True)
        p.add_argument("--threshold", type=float, required=True, help="KL stability threshold (sequence-level nats)")
        p.add_argument("--lr", type=float, default=None, help="learning rate of Figures 2/3 and the verdict")
        p.add_argument("--checkpoints", type=int, nargs="+", default=[5, 10, 15, 20], help="steps to report")
        p.add_argument("--first-n-steps", type=int, default=None, help="window of the stability map's max KL")


def _run_stage(args: argparse.Namespace) -> Any:
    if args.command == "synth-data":
        from .synthetic import synth_data

        return synth_data(args.output, seed=args.seed, rows=args.rows, desirable=args.desirable, heldout=args.heldout)
    if args.command == "pretrain-base":
        from .synthetic import pretrain_base

        kwargs = {"steps": args.steps} if args.steps else {}
        return pretrain_base(args.corpus, args.output, seed=args.seed, max_seconds=args.max_seconds, **kwargs)
    if args.command == "prepare":
        from .data import prepare

        return prepare(args.input, args.output, split=args.split)
    if args.command == "split":
        from .data import split

        return split(args.input, args.output, eval_fraction=args.eval_fraction, seed=args.seed)
    if args.command == "balance":
        from .balance import balance

        return balance(args.input, args.output, strategy=args.strategy, batch_size=args.batch_size, seed=args.seed)
    if args.command == "extract-kl":
        from .trajectories import extract

        extract(args.runs, args.output)
        return None
    if args.command in ("figures", "tables"):
        from .figures import draw_all
        from .trajectories import write_tables

        draw = draw_all if args.command == "figures" else write_tables
        paths = draw(
            args.table, args.output, threshold=args.threshold, lr=args.lr,
            checkpoints=tuple(args.checkpoints), first_n_steps=args.first_n_steps,
        )
        return {"written": [str(p) for p in paths]}
    raise AssertionError(args.command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ktos", description="KTO and KTO-S from a base model: one subcommand per pipeline stage.", allow_abbrev=False
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("train", help="train KTO or KTO-S (ktos train --help lists every KTOConfig field)", add_help=False)
    _stage_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ktos`` console script and ``python -m ktos``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = build_parser().parse_known_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    from .data import DataValidationError

    try:
        if args.command == "train":
            return _train(rest)
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
