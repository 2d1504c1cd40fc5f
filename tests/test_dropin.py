"""`KTOSConfig` as a drop-in for TRL's `KTOConfig`: every inherited default is TRL's unless listed on purpose, the
loss that trains is announced, asked-for measurements happen or fail loudly, and bad class weights are refused."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, make_trainer
from datasets import Dataset

from ktos import KTOSConfig
from ktos.compat import KTOConfig
from ktos.config import DEFAULT_CHANGES, defaults_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_every_inherited_default_is_trls_unless_listed_on_purpose(tmp_path) -> None:
    # Field by field against the installed TRL: the dataclass defaults, then the values after __post_init__.
    ours = {f.name: f for f in dataclasses.fields(KTOSConfig)}
    theirs = dataclasses.fields(KTOConfig)
    # No stale entry: each names a field TRL's KTOConfig has, except train_sampling_strategy, which ktos declares
    # itself where the installed transformers predates it (5.0.0, the floor, has no such field and samples at random).
    assert set(DEFAULT_CHANGES) - {f.name for f in theirs} <= {"train_sampling_strategy"} & set(ours)
    declared = {f.name for f in theirs if not same(field_default(f), field_default(ours[f.name]))}
    try:
        trl = KTOConfig(output_dir=str(tmp_path))
    except ValueError:  # TRL's bf16 default on a machine without a GPU: what use_cpu/bf16's entries are about
        assert "bf16" in DEFAULT_CHANGES and "use_cpu" in DEFAULT_CHANGES
        trl = KTOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    ktos = KTOSConfig(output_dir=str(tmp_path))
    resolved = {f.name for f in theirs if not same(getattr(trl, f.name), getattr(ktos, f.name))}
    unlisted = (declared | resolved) - set(DEFAULT_CHANGES)
    assert not unlisted, f"defaults differ from TRL's KTOConfig without a DEFAULT_CHANGES entry: {sorted(unlisted)}"
    # the entries that are not device-dependent really do differ (a list that outlives its reason is stale)
    assert {"logging_steps", "loss_type"} <= declared  # train_sampling_strategy: TRL 1.16's default is ktos'

    assert ktos.loss_type == trl.loss_type == "kto"  # the sentinel resolves to TRL's loss


def test_docs_show_the_one_list_of_changed_defaults() -> None:
    assert defaults_table() in (DOCS / "library.md").read_text()


def test_the_default_trains_trls_kto_and_kto_s_is_the_opt_in(tmp_path) -> None:
    assert KTOSConfig(output_dir=str(tmp_path)).loss_type == "kto"
    assert KTOSConfig(output_dir=str(tmp_path), use_kto_s=True).loss_type == "kto_s"


@pytest.mark.parametrize(
    ("fields", "named"),
    [({}, "loss_type='kto' (TRL's KTO; reference point z0"), ({"use_kto_s": True}, "loss_type='kto_s' (ktos' KTO-S")],
)
def test_the_loss_and_its_reference_point_are_announced_once(tiny_model_dir, tmp_path, caplog, fields, named) -> None:
    caplog.set_level(logging.WARNING)
    make_trainer(tiny_model_dir, tmp_path, Dataset.from_list(rows(16)), kl_probe_size=0, **fields)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    lines = [m for m in messages if "ktos: training" in m]
    assert len(lines) == 1 and named in lines[0], lines


def rows(n: int) -> list[dict]:
    return [{"prompt": f"Q: {i}+1=", "completion": f" {i + 1}", "label": i % 2 == 0} for i in range(n)]


@pytest.mark.parametrize("name", ["desirable_weight", "undesirable_weight"])
@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0, -1.0])
def test_class_weights_must_be_finite_and_positive(tmp_path, name, value) -> None:
    with pytest.raises(ValueError, match=f"{name} must be finite and > 0"):
        KTOSConfig(output_dir=str(tmp_path), **{name: value})


@pytest.mark.parametrize("fields", [{"kl_probe_size": 16}, {"kl_probe_steps": 5}])
def test_a_probe_asked_for_without_data_is_an_error(tiny_model_dir, tmp_path, fields) -> None:
    with pytest.raises(ValueError, match="eval_dataset .* kl_probe_dataset"):
        make_trainer(tiny_model_dir, tmp_path, Dataset.from_list(rows(16)), **fields)


def test_the_default_probe_without_data_warns_once_that_it_is_off(tiny_model_dir, tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    trainer = make_trainer(tiny_model_dir, tmp_path, Dataset.from_list(rows(16)))
    off = [r for r in caplog.records if "KL probe off" in r.getMessage()]
    assert trainer.probe is None and len(off) == 1 and off[0].levelno == logging.WARNING
    assert "eval_dataset" in off[0].getMessage() and "kl_probe_dataset" in off[0].getMessage()


def test_a_tracker_whose_package_is_missing_names_the_extra(tmp_path, monkeypatch) -> None:
    import transformers.integrations.integration_utils as utils

    monkeypatch.setattr(utils, "is_tensorboard_available", lambda: False)
    with pytest.raises(ImportError, match=r'report_to=.tensorboard.*pip install "ktos\[tracking\]"'):
        KTOSConfig(output_dir=str(tmp_path), report_to="tensorboard")
    monkeypatch.setattr(utils, "is_wandb_available", lambda: False)
    with pytest.raises(ImportError, match="pip install wandb"):
        KTOSConfig(output_dir=str(tmp_path), report_to=["wandb"])
    assert KTOSConfig(output_dir=str(tmp_path), **{**FAST, "report_to": "none"}).report_to == []
