"""Every TRL member ktos relies on, and the TRL releases it relies on each in (:data:`TRL_COUPLING`; the
private ones, per era, are also :data:`ktos.compat.TRL_PRIVATE_NAMES`)."""

from __future__ import annotations

from typing import NamedTuple

from packaging.version import Version

from .compat import TESTED_TRL, TRL_VERSION


class Coupling(NamedTuple):
    """One TRL member ktos relies on: how (overrides, calls, reads or writes, re-implements, subclasses), the TRL
    releases in which ktos relies on it (``since`` inclusive, ``until`` exclusive, ``None``: open) and where."""

    how: str
    since: str | None
    until: str | None
    where: str


#: Every TRL member ktos overrides, calls, reads, re-implements or subclasses (public or not), with the TRL releases
#: it relies on it in; ``tests/test_trl_habits.py`` checks each exists in the installed TRL where it is relied on,
#: that every ``KTOSTrainer`` method overriding one of ``KTOTrainer``'s is listed, and docs/library.md shows
#: :func:`coupling_table`. Transformers' ``Trainer`` members (``args``, ``state``, ``accelerator``, callbacks) are
#: not listed.
TRL_COUPLING: dict[str, Coupling] = {
    "KTOConfig": Coupling("subclasses", None, None, "ktos.config.KTOSConfig"),
    "KTOTrainer": Coupling("subclasses", None, None, "ktos.trainer.KTOSTrainer"),
    "KTOTrainer.__init__": Coupling("overrides", None, None, "KTOSTrainer: checks, caches, callbacks"),
    "KTOTrainer._name": Coupling("overrides", None, None, "KTOSTrainer: the model card's trainer name"),
    "KTOTrainer._paper": Coupling("overrides", None, None, "KTOSTrainer: the model card's citation"),
    "KTOTrainer.create_model_card": Coupling("overrides", None, None, "KTOSTrainer: names the loss"),
    "KTOTrainer.log": Coupling("overrides", None, None, "KTOSTrainer: adds the step's measurements"),
    "KTOTrainer.compute_loss": Coupling("overrides", None, None, "KTOSTrainer: hooked_compute_loss from 1.6"),
    "KTOTrainer._compute_loss": Coupling("re-implements", "1.6", None, "ktos.hooked_loss.hooked_compute_loss"),
    "KTOTrainer.kto_loss": Coupling("overrides", None, "1.6", "KTOSTrainer: KTO-S's loss (from 1.6 ktos' own)"),
    "KTOTrainer.forward": Coupling("overrides", None, "1.6", "KTOSTrainer: one model call (ktos.compat.fused_forward)"),
    "KTOTrainer.get_batch_logps": Coupling("calls", None, "1.6", "ktos.compat.fused_forward"),
    "KTOTrainer.prediction_step": Coupling("overrides", None, None, "KTOSTrainer: KTO-S's loss in evaluation"),
    "KTOTrainer.training_step": Coupling("overrides", None, None, "KTOSTrainer: checks its loss ran"),
    "KTOTrainer._prepare_dataset": Coupling("overrides", None, None, "KTOSTrainer: cached for the KL probe"),
    "KTOTrainer._metrics": Coupling("reads and writes", "1.6", None, "ktos.hooked_loss: TRL's logged metrics"),
    "KTOTrainer.ref_model": Coupling("reads", None, None, "ktos.compat.reference_model"),
    "KTOTrainer.aux_loss_enabled": Coupling("reads", None, None, "ktos.hooked_loss, ktos.trainer"),
    "trl.trainer.utils.entropy_from_logits": Coupling("calls", None, None, "ktos.compat"),
    "trl.trainer.utils.selective_log_softmax": Coupling("calls", None, None, "ktos.compat"),
    "trl.trainer.utils.use_adapter": Coupling("calls", None, None, "ktos.compat.reference_model (LoRA)"),
    "trl.models.utils.disable_gradient_checkpointing": Coupling("calls", None, None, "ktos.hooked_loss"),
    "trl.TrlParser": Coupling("calls", None, None, "ktos train's parser"),
}


def relied_on(coupling: Coupling, version: Version = TRL_VERSION) -> bool:
    """Whether ktos relies on ``coupling`` under TRL ``version``."""
    since = coupling.since is None or version >= Version(coupling.since)
    return since and (coupling.until is None or version < Version(coupling.until))


def coupling_table() -> str:
    """:data:`TRL_COUPLING` as the Markdown table docs/library.md shows."""

    def span(c: Coupling) -> str:
        if c.since is None and c.until is None:
            return f"{TESTED_TRL[0]} to {TESTED_TRL[1]}"
        return (
            f"{c.since or TESTED_TRL[0]} to {TESTED_TRL[1]}" if c.until is None else f"{TESTED_TRL[0]} to < {c.until}"
        )

    rows = [f"| `{name}` | {c.how} | {span(c)} | {c.where} |" for name, c in TRL_COUPLING.items()]
    return "\n".join(["| TRL member | ktos | TRL releases | where |", "|---|---|---|---|", *rows])
