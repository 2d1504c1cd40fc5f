"""Trains KTO-S for a few steps under `accelerate launch` with several processes, recording each rank's own
KL estimate (the mean log-ratio on its mismatched pairs, before TRL gathers it) at every loss call.

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_kl.py POLICY_DIR REFERENCE_DIR OUT_DIR

Used by tests/test_train_options.py; writes OUT_DIR/rank<i>.jsonl and, from rank 0, OUT_DIR/log_history.json.
"""

import json
import random
import sys
from pathlib import Path

from datasets import Dataset

from ktos import KTOSConfig, KTOSTrainer
from ktos.models import load_model_and_tokenizer


class RecordingTrainer(KTOSTrainer):
    def kto_loss(self, *logps):
        policy_kl, reference_kl = logps[2], logps[5]
        with (OUT / f"rank{self.accelerator.process_index}.jsonl").open("a") as fh:
            fh.write(json.dumps(float((policy_kl - reference_kl).mean())) + "\n")
        return super().kto_loss(*logps)


def rows(n: int) -> list[dict]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        a, b = rng.randrange(10, 50), rng.randrange(10, 50)
        label = i % 4 != 3
        out.append({"prompt": f"Q: {a}+{b}=", "completion": f" {a + b if label else a + b + 1}", "label": label})
    return out


if __name__ == "__main__":
    policy_dir, reference_dir, OUT = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    model, tokenizer = load_model_and_tokenizer(policy_dir)
    reference = load_model_and_tokenizer(reference_dir)[0]
    args = KTOSConfig(
        output_dir=str(OUT / "run"), per_device_train_batch_size=4, max_length=32, gradient_checkpointing=False,
        save_strategy="no", disable_tqdm=True, report_to="none", max_steps=4, learning_rate=1e-2, loss_type="kto_s",
    )  # fmt: skip
    trainer = RecordingTrainer(model=model, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows(64)),
                               processing_class=tokenizer)  # fmt: skip
    trainer.train()
    if trainer.accelerator.is_main_process:
        (OUT / "log_history.json").write_text(json.dumps(trainer.state.log_history))
