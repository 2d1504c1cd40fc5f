#!/usr/bin/env bash
# A GPU session's measurements for docs/performance.md, in one command (its time on an H200 not yet measured):
#   1. benchmarks/throughput.py at the 199M configuration (bf16, 16 x 512): TRL's KTOTrainer, KTO and KTO-S,
#      fused, compiled, with eager attention (and flash-attn's, where installed) and at a 32-row micro-batch, side by
#      side, with a torch.profiler table of a fused KTO-S step;
#   2. the same with precomputed reference log-probs;
#   3. benchmarks/pretrain_throughput.py: `ktos pretrain-base`'s tokens/s at every size, as config/scale_gpu.yaml
#      pretrains (256 lines a step).
# Results (JSON and Markdown, named after the device) and session.log go to $OUT (default
# results/reference/perf). TINY=1 runs the same at the CPU's tiny sizes, to check the script before a GPU run.
# PARTS picks the measurements (default "throughput precompute pretrain"), to split them over two commands.
#
#   bash benchmarks/gpu_session.sh            # on the GPU machine, after installing the wheels it lacks
#   PARTS=pretrain bash benchmarks/gpu_session.sh
#   TINY=1 OUT=/tmp/gpu_session bash benchmarks/gpu_session.sh
set -uo pipefail
out=${OUT:-results/reference/perf}
mkdir -p "$out"
variants=trl,kto,kto_s,kto+fused,kto_s+fused,trl+compile,kto_s+fused+compile,kto_s+fused+eager,kto_s+fused+b32
python -c "import flash_attn" 2>/dev/null && variants+=,kto_s+fused+flash
if [ "${TINY:-0}" = 1 ]; then
  size=(--preset cpu --steps 8 --warmup 2 --batch 4)
  variants=${variants/b32/b8}
  pretrain=(--sizes 0.09M,0.3M --steps 5 --batch-size 16)
else
  size=(--preset gpu199m)
  pretrain=(--sizes 0.09M,0.3M,1M,2.6M,21M,105M --steps 300 --batch-size 256)
fi
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  python -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'trl', trl.__version__)"
  status=0
  for part in ${PARTS:-throughput precompute pretrain}; do
    echo "== $part, $(date -u +%T)"
    case $part in
      throughput) python benchmarks/throughput.py "${size[@]}" --variants "$variants" --profile kto_s+fused \
        --out "$out" || status=1 ;;
      precompute) python benchmarks/throughput.py "${size[@]}" --variants trl,kto_s,kto_s+fused --precompute \
        --out "$out" || status=1 ;;
      pretrain) python benchmarks/pretrain_throughput.py "${pretrain[@]}" --out "$out" || status=1 ;;
      *) echo "unknown part $part (throughput, precompute, pretrain)"; status=1 ;;
    esac
  done
  date -u
  exit $status
} 2>&1 | tee "$out/session.log"
