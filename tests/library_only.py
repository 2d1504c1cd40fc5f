"""The library alone: ``import ktos`` and a short training with the probe, without the study's packages.

Run by tests/test_packaging.py (the study's packages made unimportable here, as if absent) and by CI in a venv
holding only the library's dependencies (the README's install line)::

    python tests/library_only.py OUT_DIR

Prints the optimizer steps taken and the study packages imported (none).
"""

from __future__ import annotations

import sys

STUDY_PACKAGES = ("matplotlib", "seaborn", "scipy", "snakemake")
sys.modules.update(dict.fromkeys(STUDY_PACKAGES))  # None: importing them fails, as when they are not installed

from pathlib import Path  # noqa: E402

from datasets import Dataset  # noqa: E402

from ktos import KTOSConfig, KTOSTrainer, load_model_and_tokenizer  # noqa: E402
from ktos.toy.tiny import save_tiny  # noqa: E402


def main(out_dir: Path) -> None:
    rows = [{"prompt": f"Q: {i}+1=", "completion": f" {i + 1}", "label": i % 2 == 0} for i in range(16)]
    model, tokenizer = load_model_and_tokenizer(str(save_tiny(out_dir / "tiny", seed=0)))
    args = KTOSConfig(output_dir=str(out_dir / "run"), max_steps=2, per_device_train_batch_size=4, max_length=32,
                      gradient_checkpointing=False, report_to="none", save_strategy="no", disable_tqdm=True,
                      kl_probe_size=8)  # fmt: skip
    trainer = KTOSTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          eval_dataset=Dataset.from_list(rows[:8]))  # fmt: skip
    trainer.train()
    imported = sorted(k for k, m in sys.modules.items() if m is not None and k.split(".")[0] in STUDY_PACKAGES)
    print(trainer.state.global_step, imported)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
