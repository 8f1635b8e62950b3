#!/usr/bin/env bash
# Everything behind results/bench/spr-amx/, on a development machine with AMX (2 vCPUs, run from
# the repository root with the extension built: `make setup`), one step after another so no two
# timings share the cores: what CPU it is, the engine bench at DistilBERT-base shape (sequence
# 128, 2 threads, batch 1 and 8, 5 timed runs per engine and round), the GEMM microbenchmark,
# the AMX dense kernel's A/B and timing probe, where a batch-1 forward's time goes (1x4 and 16x64
# pruned at 90 %), and the attention kernel alone (fp32 / bf16 on AMX tiles / int8).
# Usage: bash results/bench/spr-amx/run.sh [OUT_DIR]   (default: results/bench/spr-amx/<date>)
set -eu
PY=${PY:-.venv/bin/python}
OUT=${1:-results/bench/spr-amx/$(date -u +%Y%m%d-%H%M)}
mkdir -p "$OUT"
export OMP_NUM_THREADS=2 WORKBENCH_PROGRESS=0 MPLBACKEND=Agg
grep -q amx_int8 /proc/cpuinfo || { echo "this CPU has no AMX-INT8: nothing here is about it"; exit 1; }
{
  date -u; lscpu; git log --oneline -1
  $PY -c "import sys, numpy, torch, onnxruntime; print(sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__, 'ort', onnxruntime.__version__)"
  gcc --version | head -1
  $PY - <<'PYEOF'
import workbench_ext.cpu as c
from workbench.runtime.kernels import kernel_report
print("features", {k: v for k, v in c.features().items() if v})
print("available", c.available_isas(), "active", c.active_isa())
print("clock GHz (measured)", round(c.measure_clock_ghz(), 2))
print(kernel_report())
PYEOF
} > "$OUT/machine.txt" 2>&1
$PY -m workbench.cli bench --models distilbert --threads 2 --batch 1,8 --runs 5 --no-gemm \
  --engines ort-int8,wb-int8,wb-int8-sp70,wb-int8-sp80,wb-int8-sp90,wb-int8-tile90,wb-int8-bf16attn,wb-int8-sp90-bf16attn \
  --out "$OUT/bench" > "$OUT/bench.log" 2>&1
$PY -m workbench.bench.gemm --m 128 --k 768 --n 3072 --threads 1,2 --out "$OUT/gemm" > "$OUT/gemm.txt" 2>&1
$PY results/bench/emr-amx/amx_ab.py --rounds 11 > "$OUT/amx_ab.txt" 2>&1
for b in 1x4 16x64; do $PY results/bench/emr-amx/forward_breakdown.py --threads 2 --reps 30 --block $b > "$OUT/breakdown-$b.txt" 2>&1; done
$PY results/bench/zen4-bf16attn/attention_kernel.py > "$OUT/attention.txt" 2>&1
echo "wrote $OUT"
