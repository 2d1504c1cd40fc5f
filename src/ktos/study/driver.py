"""The multi-run driver behind ``ktos train``: its arguments, and its runs one after the other.

:func:`parse_train_args` parses TRL's ``ModelConfig``, :class:`~ktos.study.run.RunArguments`,
:class:`~ktos.study.run.DataArguments` and :class:`~ktos.config.KTOSConfig` with TRL's ``TrlParser``, from
``--config FILE.yaml`` (or ``--config=FILE.yaml``) and/or flags (flags win), so every ``KTOConfig`` field works
from the command line and from YAML, and unknown keys are refused. With ``--run_dirs D...``, :func:`run_argvs`
makes one argument list per run from the directories' names, and :func:`train_runs` trains them in one process,
paying the start-up once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..loss_types import STUDY_METHODS
from .runnames import parse_run_name

log = logging.getLogger("ktos")


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

    from ..config import KTOSConfig
    from .run import DataArguments, RunArguments

    dataclasses: tuple[Any, ...] = (ModelConfig, RunArguments, DataArguments, KTOSConfig)
    parser = TrlParser(dataclasses, prog="ktos train")
    parser.add_argument("--config", metavar="FILE", help="YAML file of arguments (flags given on the command line win)")
    try:
        parsed = parser.parse_args_and_config(args=normalise_config_flag(argv))
    except (ValueError, OSError) as err:
        raise SystemExit(f"ktos train: error: {err}") from None
    return parsed[0], parsed[1], parsed[2], parsed[3]


#: What a run's name sets when ``ktos train --run_dirs`` trains several runs (:mod:`ktos.study.runnames`).
SET_BY_RUN_NAME = ("--output_dir", "--loss_type", "--use_kto_s", "--learning_rate", "--seed")


def run_argvs(argv: Sequence[str]) -> list[list[str]]:
    """The argument list of each run ``ktos train argv`` asks for: ``argv`` itself, or with ``--run_dirs D...``
    one list per directory, whose name (``{method}_lr{lr}_seed{seed}``) sets output_dir, loss_type (the method's,
    :data:`ktos.loss_types.STUDY_METHODS`), learning_rate and seed, with ``{seed}`` in ``--train_data`` and
    ``--weights_from`` replaced."""
    argv = normalise_config_flag(argv)
    run_args = parse_train_args(argv)[1]
    if not run_args.run_dirs:
        return [argv]
    given = [flag for flag in SET_BY_RUN_NAME if any(a == flag or a.startswith(flag + "=") for a in argv)]
    if given:
        raise SystemExit(f"ktos train: error: {', '.join(given)} are set by the --run_dirs names")
    shared = list(argv)
    if "--run_dirs" in shared:  # else they came from the --config file
        i = shared.index("--run_dirs")
        del shared[i : i + 1 + len(run_args.run_dirs)]
    argvs = []
    for run_dir in run_args.run_dirs:
        method, lr, seed = parse_run_name(Path(run_dir).name)
        flags = ["--output_dir", run_dir, "--loss_type", STUDY_METHODS[method], "--learning_rate", repr(lr)]
        argvs.append([a.replace("{seed}", str(seed)) for a in shared] + flags + ["--seed", str(seed)])
    return argvs


def apply_log_level(config: Any) -> None:
    """TRL's ``--log_level`` (a ``TrainingArguments`` field), as ``trl kto`` applies it: unless ``"passive"``, the
    process's level (``log_level``, or ``log_level_replica`` off the main process) for transformers, datasets and
    TRL."""
    if config.log_level == "passive":
        return
    import datasets.utils.logging
    import transformers.utils.logging

    level = config.get_process_log_level()
    transformers.utils.logging.set_verbosity(level)
    datasets.utils.logging.set_verbosity(level)
    logging.getLogger("trl").setLevel(level)


def train_runs(argv: Sequence[str]) -> int:
    """``ktos train argv``: each run :func:`run_argvs` asks for, one after the other in this process."""
    from .run import train

    argv = list(argv)
    argvs = run_argvs(argv)
    for i, run_argv in enumerate(argvs, 1):
        args = parse_train_args(run_argv)
        apply_log_level(args[3])
        if len(argvs) > 1 or "--run_dirs" in argv:
            log.info("run %d of %d: %s", i, len(argvs), args[3].output_dir)
        train(*args)
    return 0
