"""benchmarks/throughput.py and benchmarks/pretrain_throughput.py on the CPU at a tiny size: every variant or size
timed, the tables' arithmetic, the files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from ktos import compat

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("throughput", BENCHMARKS / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["throughput"] = module  # its dataclasses look their module up; pretrain_throughput imports it
    spec.loader.exec_module(module)
    yield module
    del sys.modules["throughput"]


def test_peak_flops_by_device_name_and_precision(throughput) -> None:
    assert throughput.peak_flops("NVIDIA H100 PCIe", "bf16", None) == 756e12
    assert throughput.peak_flops("NVIDIA H100 80GB HBM3", "bf16", None) == 989.4e12
    assert throughput.peak_flops("NVIDIA H200", "fp32", None) == 66.9e12
    assert throughput.peak_flops("CPU (x86_64)", "fp32", None) is None
    assert throughput.peak_flops("CPU (x86_64)", "fp32", 2.0) == 2e12


def test_synthetic_rows_are_exactly_seq_len_tokens(throughput) -> None:
    from ktos.toy.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    for row in throughput.synthetic_rows(6, 17):
        assert len(tokenizer(row["prompt"] + row["completion"])["input_ids"]) + 1 == 17  # + EOS


def test_variant_names_parse_and_bad_ones_are_refused(throughput) -> None:
    Variant = throughput.Variant
    for name in ("trl", "kto_s", "kto+fused", "kto_s+fused+compile", "trl+compile+b32", "kto_s+b8"):
        assert Variant.parse(name).name == name
    assert Variant.parse("kto_s+b32+fused") == Variant("kto_s", fused=True, batch=32)
    for bad, why in (("dpo", "unknown method"), ("kto+fast", "unknown option"), ("kto+b0", "unknown option"),
                     ("trl+fused", "no fused"), ("kto_s+shared", "shared needs fused")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            Variant.parse(bad)
    with pytest.raises(ValueError, match="first variant must be trl"):
        throughput.variants("kto,trl")
    with pytest.raises(ValueError, match="comes twice"):
        throughput.variants("trl,kto+fused,kto+fused")
    assert [v.name for v in throughput.variants(throughput.DEFAULT_VARIANTS)] == [
        "trl", "kto", "kto_s", "kto+fused", "kto_s+fused"]  # fmt: skip


@pytest.mark.slow
def test_cpu_run_times_every_variant_side_by_side(throughput, tmp_path) -> None:
    batch, seq_len, steps, warmup = 4, 12, 4, 1
    names = ["trl", "kto", "kto_s", "kto+fused", "kto_s+fused", "kto_s+fused+b8"]
    names += ["kto_s+fused+shared"] if compat.KTO_LOSS_HOOK else []
    argv = ["--preset", "cpu", "--batch", str(batch), "--seq-len", str(seq_len), "--steps", str(steps),
            "--warmup", str(warmup), "--peak-tflops", "1", "--out", str(tmp_path),
            "--profile", "kto_s+fused", "--variants", ",".join(names)]  # fmt: skip
    rows = throughput.main(argv)
    assert [r["variant"] for r in rows] == names
    n_params = rows[0]["params"]
    assert 80_000 < n_params < 100_000  # the embedded default's 0.09M shape
    for row in rows:
        rows_per_step = 8 if row["variant"].endswith("+b8") else batch
        assert row["tokens_per_step"] == rows_per_step * seq_len
        assert row["model_flops_per_step"] == 12 * n_params * rows_per_step * seq_len
        assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["tokens_per_s"] == pytest.approx(rows_per_step * seq_len / (row["median_ms"] / 1e3))
        assert row["mfu"] == pytest.approx(row["model_flops_per_step"] / (row["median_ms"] / 1e3) / 1e12)
        assert row["speed_vs_trl"] == pytest.approx(row["tokens_per_s"] / rows[0]["tokens_per_s"])
    assert rows[0]["speed_vs_trl"] == 1.0
    saved = json.loads(next(tmp_path.glob("throughput_CPU*_h64_l2_b4x12_fp32_sdpa_trl*.json")).read_text())
    assert [r["variant"] for r in saved["rows"]] == names and saved["meta"]["trl"] == str(compat.TRL_VERSION)
    assert "| kto_s+fused+b8 |" in next(tmp_path.glob("*.md")).read_text()


def test_policy_is_prepared_as_train_prepares_it(throughput, tmp_path) -> None:
    """The timed policy is the accelerator-prepared one, as in ``Trainer.train``: at bf16 its forward passes run
    under bf16 autocast (unprepared, they would run in fp32), and ``+compile`` compiles it."""
    args = throughput.parse_args(["--preset", "cpu", "--batch", "2", "--seq-len", "8", "--steps", "2",
                                  "--precision", "bf16"])  # fmt: skip
    data = throughput.synthetic_rows(4, 8)
    plain = throughput.make_trainer(throughput.Variant("kto_s"), data, args, str(tmp_path / "plain"))
    dtypes = []
    hook = plain.model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    throughput.timed_step(plain, next(iter(plain.get_train_dataloader())))
    hook.remove()
    assert dtypes == [torch.bfloat16, torch.bfloat16]  # the KL pairs' call and the graded call
    compiled = throughput.make_trainer(throughput.Variant("kto_s", compile=True), data, args, str(tmp_path / "c"))
    assert type(compiled.model_wrapped).__name__ == "OptimizedModule" and plain.model_wrapped is plain.model


@pytest.mark.slow
def test_pretrain_throughput_times_each_size(throughput, tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("pretrain_throughput", BENCHMARKS / "pretrain_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--sizes", "0.09M,0.3M", "--steps", "3", "--batch-size", "8", "--out", str(tmp_path)])
    assert [r["size"] for r in rows] == ["0.09M", "0.3M"]
    assert 80_000 < rows[0]["params"] < 100_000 < rows[1]["params"]
    for row in rows:
        assert row["steps"] == 3 and row["device"] == "cpu" and row["mfu"] is None
        assert 3 * 8 * 10 < row["tokens"] < 3 * 8 * 20  # lines "Q: a+b= c" and EOS: 13 to 15 tokens
        assert row["tokens_per_s"] == pytest.approx(row["tokens"] / row["seconds"])
    saved = json.loads((tmp_path / "pretrain_cpu_b8_0p09M_0p3M.json").read_text())
    assert [r["size"] for r in saved["rows"]] == ["0.09M", "0.3M"]
    with pytest.raises(SystemExit):
        module.parse_args(["--sizes", "7M"])
