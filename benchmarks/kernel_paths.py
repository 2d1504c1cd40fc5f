"""How far the floating-point kernel path moves a base model and a run trained from a committed base.

The same code, seed and data give other bases on machines with other instruction sets (docs/study.md, third
amendment). This benchmark forces the kernel paths this machine supports, each in a fresh process:

* ``ATEN_CPU_CAPABILITY`` (torch's vectorised kernels: ``avx512``, ``avx2``, ``default``), and
* ``MKL_CBWR`` (MKL's conditional bitwise reproducibility: ``COMPATIBLE`` pins MKL's code path), with
  ``ONEDNN_MAX_CPU_ISA`` capping oneDNN's.

**Pretraining** (``ktos pretrain-base --reference``): does each path rebuild the committed base bit for bit, how
far are the weights (largest parameter difference), what held-out accuracy does it reach, in how many seconds?
A pinned path (``ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE``) whose base does not change when the other
variables change is the rebuild mode a machine-independent base needs.

**Training from the committed base** (``ktos train``, one run of the headline cell): the largest difference of
the probe KL (nats) over all probe steps between each path and the machine's own, and between the machine's
own and a committed trajectory: the tolerance to which a rerun on another machine reproduces the study.

    python benchmarks/kernel_paths.py --data results/data --train-config results/train_configs/main/X.yaml \\
        --reference-run results/runs/main/constant_b0.2/0.09M_seed0/kto_lr0.00027_seed15 \\
        --out results/reference/perf

Writes ``kernel_paths_CPU.md`` (and ``.json``) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ktos.provenance import ktos_revision
from ktos.runs.files import read_trajectory

log = logging.getLogger("kernel_paths")

#: Kernel paths: label -> environment variables set for the process (the machine's own is the empty one).
PATHS: dict[str, dict[str, str]] = {
    "as installed": {},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "pinned: ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
    },
    "pinned, oneDNN capped at AVX2": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
}


def run(args: list[str], env: dict[str, str]) -> float:
    """Run ``python -m ktos ARGS`` with ``env`` added; its wall-clock seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ktos", *args], env={**os.environ, **env}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def pretraining(data: Path, reference: Path, size: str, seed: int, tmp: Path) -> list[dict]:
    """One pretraining per kernel path, each compared with the committed ``reference``."""
    rows = []
    for label, env in PATHS.items():
        out = tmp / f"pretrain_{len(rows)}"
        seconds = run(["pretrain-base", "--corpus", str(data / "synthetic/corpus.txt"), "--heldout",
                       str(data / "synthetic/heldout.jsonl"), "--output", str(out), "--size", size, "--seed",
                       str(seed), "--reference", str(reference)], env)  # fmt: skip
        record = json.loads((out / "pretrain_log.json").read_text())
        rows.append({"path": label, "identical": record["reference"]["identical"],
                     "max_abs_diff": record["reference"]["max_abs_diff"], "sha256": record["sha256"][:12],
                     "heldout_accuracy": record["heldout_accuracy"], "seconds": round(seconds, 1)})  # fmt: skip
        log.info("pretraining, %s: %s", label, rows[-1])
    return rows


def training(data: Path, base: Path, config: Path, run_name: str, reference_run: Path | None, tmp: Path) -> list[dict]:
    """One training run per kernel path; each trajectory's largest probe-KL difference from the first's (and the
    first's from ``reference_run``)."""
    trajectories = {}
    rows = []
    for label, env in PATHS.items():
        run_dir = tmp / f"train_{len(rows)}" / run_name
        seconds = run(["train", "--config", str(config), "--run_dirs", str(run_dir), "--model_name_or_path", str(base),
                       "--train_data", str(data / "balanced/seed{seed}"), "--eval_data", str(data / "split/eval"),
                       "--weights_from", str(data / "balanced/seed{seed}/manifest.json"), "--heldout",
                       str(data / "synthetic/heldout.jsonl")], env)  # fmt: skip
        trajectories[label] = {r["step"]: r["probe_kl"] for r in read_trajectory(run_dir / "trajectory.jsonl")
                               if "probe_kl" in r}  # fmt: skip
        own = trajectories["as installed"]
        mine = trajectories[label]
        diff = max(abs(mine[s] - own[s]) for s in own)
        rows.append({"path": label, "max_abs_probe_kl_diff": diff, "final_probe_kl": mine[max(mine)],
                     "seconds": round(seconds, 1)})  # fmt: skip
        log.info("training, %s: %s", label, rows[-1])
    if reference_run is not None:
        committed = {r["step"]: r["probe_kl"] for r in read_trajectory(reference_run / "trajectory.jsonl")
                     if "probe_kl" in r}  # fmt: skip
        own = trajectories["as installed"]
        rows.append({"path": f"as installed against {reference_run.name} (committed)",
                     "max_abs_probe_kl_diff": max(abs(own[s] - committed[s]) for s in committed),
                     "final_probe_kl": committed[max(committed)], "seconds": None})  # fmt: skip
    return rows


def markdown(pre: list[dict], train: list[dict], args: argparse.Namespace) -> str:
    lines = [f"kernel paths on {os.uname().machine}, ktos {ktos_revision()}; base {args.base.name}, "
             f"run {args.run_name}", "", "| pretraining path | identical to the committed base | largest parameter "
             "difference | held-out accuracy | sha256 | seconds |", "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['path']} | {r['identical']} | {r['max_abs_diff']:.3g} | {r['heldout_accuracy']} | "
              f"{r['sha256']} | {r['seconds']} |" for r in pre]  # fmt: skip
    lines += ["", "| training path | largest probe-KL difference from the machine's own (nats) | final probe KL | "
              "seconds |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['path']} | {r['max_abs_probe_kl_diff']:.3g} | {r['final_probe_kl']:.6g} | {r['seconds']} |"
              for r in train]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("results/data"), help="the workflow's results/data")
    parser.add_argument("--base", type=Path, default=Path("results/reference/bases/0.09M_seed0"))
    parser.add_argument("--size", default="0.09M")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-config", type=Path, required=True, help="a training job's results/train_configs file")
    parser.add_argument("--run-name", default="kto_lr0.00027_seed15")
    parser.add_argument("--reference-run", type=Path, help="a committed run dir of the same run, to compare with")
    parser.add_argument("--skip-pretraining", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        train = training(args.data, args.base, args.train_config, args.run_name, args.reference_run, Path(tmp))
        pre = [] if args.skip_pretraining else pretraining(args.data, args.base, args.size, args.seed, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernel_paths_CPU.json").write_text(json.dumps({"pretraining": pre, "training": train}, indent=2))
    (args.out / "kernel_paths_CPU.md").write_text(markdown(pre, train, args))
    log.info("wrote %s", args.out / "kernel_paths_CPU.md")


if __name__ == "__main__":
    main()
