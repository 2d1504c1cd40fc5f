"""benchmarks/throughput.py on the CPU at a tiny size: every variant timed, the table's arithmetic, the files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from ktos import compat

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def throughput():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["throughput"] = module  # its dataclasses look their module up
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


@pytest.mark.slow
def test_cpu_run_times_every_variant_side_by_side(throughput, tmp_path) -> None:
    batch, seq_len, steps, warmup = 4, 12, 4, 1
    argv = ["--preset", "cpu", "--batch", str(batch), "--seq-len", str(seq_len), "--steps", str(steps),
            "--warmup", str(warmup), "--peak-tflops", "1", "--out", str(tmp_path),
            "--profile", "kto_s+fused"]  # fmt: skip
    shared = ["--shared-policy"] if compat.KTO_LOSS_HOOK else []
    rows = throughput.main(argv + shared)
    names = [r["variant"] for r in rows]
    assert names == ["trl", "kto", "kto_s", "kto+fused", "kto_s+fused"] + (["kto_s+fused+shared"] if shared else [])
    n_params = rows[0]["params"]
    assert 80_000 < n_params < 100_000  # the embedded default's 0.09M shape
    for row in rows:
        assert row["tokens_per_step"] == batch * seq_len
        assert row["model_flops_per_step"] == 12 * n_params * batch * seq_len
        assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["tokens_per_s"] == pytest.approx(batch * seq_len / (row["median_ms"] / 1e3))
        assert row["mfu"] == pytest.approx(row["model_flops_per_step"] / (row["median_ms"] / 1e3) / 1e12)
    assert rows[0]["speed_vs_trl"] == 1.0
    saved = json.loads(next(tmp_path.glob("throughput_CPU*_h64_l2_b4x12_fp32_sdpa_trl*.json")).read_text())
    assert [r["variant"] for r in saved["rows"]] == names and saved["meta"]["trl"] == str(compat.TRL_VERSION)
    assert "| kto_s+fused |" in next(tmp_path.glob("*.md")).read_text()
