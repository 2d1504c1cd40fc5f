"""The multi-run driver behind ``ktos train``: its arguments, and its runs one after the other.

:func:`parse_train_args` parses TRL's ``ModelConfig``, :class:`~ktos.runs.run.RunArguments`,
:class:`~ktos.runs.run.DataArguments` and :class:`~ktos.config.KTOSConfig` with TRL's ``TrlParser``, from
``--config FILE.yaml`` (or ``--config=FILE.yaml``) and/or flags (flags win), so every ``KTOConfig`` field works
from the command line and from YAML, and unknown keys are refused. With ``--run_dirs D...``, :func:`run_argvs`
makes one argument list per run from the directories' names, and :func:`train_runs` trains them in one process,
paying the start-up once.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..loss_types import STUDY_METHODS
from ..runnames import parse_run_name

if TYPE_CHECKING:
    from .quality import TaskEval

log = logging.getLogger("ktos")
#: ``ktos train``'s exit status when a run diverged, unless ``--allow_divergence true``.
EXIT_DIVERGED = 3


class UsageError(SystemExit):
    """A ``ktos train`` usage error: exit status 2; ``str()`` is the one-line message (:func:`ktos.cli.main` prints
    it)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def unknown_key(key: str, known: Sequence[str], prefix: str = "") -> UsageError:
    """The error for an unknown key (a flag: ``prefix="--"``), naming the nearest known one
    (:func:`difflib.get_close_matches`)."""
    near = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {prefix + near[0]!r}?)" if near else ""
    return UsageError(f"ktos train: error: unknown key {prefix + key!r}{hint}")


def check_keys(parser: Any, argv: Sequence[str]) -> None:
    """:class:`UsageError` for the first flag in ``argv`` or key in its ``--config`` YAML file that no dataclass of
    ``parser`` has (abbreviations are not keys: ``--learning_rat`` is refused, not read as ``--learning_rate``)."""
    import yaml

    fields = sorted({name for types in parser.dataclass_types for name in types.__dataclass_fields__})
    options = {option for action in parser._actions for option in action.option_strings}
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and len(flag) > 2 and flag not in options:
            raise unknown_key(flag[2:].replace("-", "_"), fields, prefix="--")
    if "--config" in argv:
        path = argv[argv.index("--config") + 1]
        try:
            config = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise UsageError(f"ktos train: error: --config {path}: {err}") from None
        if not isinstance(config, dict):
            raise UsageError(f"ktos train: error: --config {path}: not a mapping of keys to values")
        for key in config:
            if key != "env" and key not in fields:  # TRL's parser reads `env` (environment variables) too
                raise unknown_key(str(key), fields)


def normalise_config_flag(argv: Sequence[str]) -> list[str]:
    """``--config=FILE`` -> ``--config FILE`` (TRL's parser reads the spaced form only); one ``--config`` at most."""
    out: list[str] = []
    for arg in argv:
        out.extend(["--config", arg.split("=", 1)[1]] if arg.startswith("--config=") else [arg])
    if out.count("--config") > 1:
        raise UsageError("ktos train: error: --config given more than once")
    if out and out[-1] == "--config":
        raise UsageError("ktos train: error: --config needs a YAML file")
    return out


def parse_train_args(argv: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """``(ModelConfig, RunArguments, DataArguments, KTOSConfig)`` from flags and ``--config FILE.yaml``, through TRL's
    ``TrlParser``: the file's values replace the defaults, flags win over the file, and an unknown key in
    either raises :class:`UsageError` (exit status 2) naming it and the nearest valid name."""
    from trl import ModelConfig, TrlParser

    from ..config import KTOSConfig
    from .run import DataArguments, RunArguments

    dataclasses: tuple[Any, ...] = (ModelConfig, RunArguments, DataArguments, KTOSConfig)
    parser = TrlParser(dataclasses, prog="ktos train")
    parser.add_argument("--config", metavar="FILE", help="YAML file of arguments (flags given on the command line win)")
    argv = normalise_config_flag(argv)
    check_keys(parser, argv)
    try:
        parsed = parser.parse_args_and_config(args=argv)
    except (ValueError, OSError) as err:
        raise UsageError(f"ktos train: error: {err}") from None
    return parsed[0], parsed[1], parsed[2], parsed[3]


#: What a run's name sets when ``ktos train --run_dirs`` trains several runs (:mod:`ktos.runnames`).
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
        raise UsageError(f"ktos train: error: {', '.join(given)} are set by the --run_dirs names")
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
    import datasets.utils.logging
    import transformers.utils.logging

    if config.log_level != "passive":
        level = config.get_process_log_level()
        transformers.utils.logging.set_verbosity(level)
        datasets.utils.logging.set_verbosity(level)
        logging.getLogger("trl").setLevel(level)
    quiet_progress_bars()


def quiet_progress_bars() -> None:
    """Datasets' ``map`` bars and transformers' weight-loading bars off while transformers logs at WARNING or above
    (``ktos train``'s default), on at INFO and DEBUG; the training bar (transformers' ``tqdm.auto``) stays."""
    import datasets.utils.logging
    import transformers.utils.logging

    if transformers.utils.logging.get_verbosity() >= logging.WARNING:
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    else:
        datasets.enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()


def train_runs(argv: Sequence[str], task: TaskEval | None = None) -> int:
    """``ktos train argv``: each run :func:`run_argvs` asks for, one after the other in this process. Returns the exit
    status: 0, or :data:`EXIT_DIVERGED` when a run diverged (after training the others) unless
    ``--allow_divergence`` (the study's workflow records divergence as an outcome). ``task`` scores ``--heldout``
    items (:class:`~ktos.runs.quality.TaskEval`)."""
    from .run import train

    argv = list(argv)
    argvs = run_argvs(argv)
    diverged = []
    for i, run_argv in enumerate(argvs, 1):
        args = parse_train_args(run_argv)
        apply_log_level(args[3])
        if len(argvs) > 1 or "--run_dirs" in argv:
            log.info("run %d of %d: %s", i, len(argvs), args[3].output_dir)
        if train(*args, task=task) == "diverged":
            diverged.append(args[3].output_dir)
    if diverged and not args[1].allow_divergence:
        log.error(
            "ktos train: %d run(s) diverged (%s): exit status %d (--allow_divergence true: exit 0)",
            len(diverged),
            ", ".join(map(str, diverged)),
            EXIT_DIVERGED,
        )
        return EXIT_DIVERGED
    return 0
