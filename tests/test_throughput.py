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
    for name in ("trl", "kto_s", "kto+fused", "kto_s+fused+compile", "trl+compile+b32", "kto_s+b8", "kto+eager"):
        assert Variant.parse(name).name == name
    assert Variant.parse("kto_s+b32+fused") == Variant("kto_s", fused=True, batch=32)
    assert Variant.parse("trl+flash").attn == "flash" and throughput.ATTENTION["flash"] == "flash_attention_2"
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
    names = ["trl", "kto", "kto_s", "kto+fused", "kto_s+fused", "kto_s+fused+eager", "kto_s+fused+b8"]
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
    markdown = next(tmp_path.glob("*.md")).read_text()
    assert "| kto_s+fused+b8 |" in markdown and "\n\ntorch.profiler, one step of kto_s+fused:\n" in markdown
    assert markdown.count("aten::") >= 5  # the profile's rows


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
    eager = throughput.make_trainer(throughput.Variant("kto_s", attn="eager"), data, args, str(tmp_path / "e"))
    assert plain.model.config._attn_implementation == "sdpa"  # --attn's default
    assert eager.model.config._attn_implementation == eager.ref_model.config._attn_implementation == "eager"


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


@pytest.fixture(scope="module")
def padding():
    spec = importlib.util.spec_from_file_location("padding", BENCHMARKS / "padding.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_padding_arithmetic_and_bucketing(padding) -> None:
    batches = [[1, 5], [5, 1], [2, 2, 2]]
    assert padding.padded_positions(batches) == 10 + 10 + 6
    assert padding.bucketed(batches, window=2) == [[1, 1], [5, 5], [2, 2, 2]]  # the last window alone
    result = padding.report(batches, window=2)
    assert result["real"] == 18 and result["positions"] == 26 and result["bucketed_positions"] == 18
    assert result["padding"] == pytest.approx(8 / 26) and result["bucketed_padding"] == 0
    assert result["positions_saved"] == pytest.approx(8 / 26)


@pytest.mark.slow
def test_padding_reads_the_trainers_batches(padding, tmp_path) -> None:
    """Rows of 3 and 9 completion characters alternate: each batch of 2 pads one row by 6 tokens."""
    from ktos.toy.tiny import save_tiny

    rows = [{"prompt": "Q: 1+1=", "completion": " 2" + "x" * (0 if i % 2 else 6), "label": i % 4 < 2}
            for i in range(16)]  # fmt: skip
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = save_tiny(tmp_path / "model", hidden_size=16, num_layers=1, num_heads=2)
    result = padding.main(["--data", str(tmp_path / "data.jsonl"), "--model", str(model), "--batch", "2",
                           "--window", "8"])  # fmt: skip
    completion = result["completion"]
    assert completion["positions"] - completion["real"] == 8 * 6  # 8 batches, one short row each
    assert completion["bucketed_positions"] == completion["real"]  # sorted, every batch holds one length
