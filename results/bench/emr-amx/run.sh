#!/usr/bin/env bash
# One prepared run on a borrowed machine (the device tool's 16-core host): what CPU it is, build
# the extension there, then, pinned to 2 physical cores (the issue's 2-thread shape), most
# valuable first: (on AMX) the dense kernel's timing probe and A/B, the engine bench, the GEMM
# microbenchmark, the kernel tests on every ISA the CPU has, the forward's breakdown. Each step
# is time-boxed, skipped when the run's budget (BUDGET_S, default 540 s) would not hold it, and
# leaves its log in $OUT (8 files at most come back), so a run cut short still returns what it
# finished. Needs .devsite/ (datasets, dill, multiprocess, _multiprocess copied from .venv)
# carried beside the tree.
# Usage there: bash results/bench/emr-amx/run.sh   (env: PY, OUT, QUICK=1 for a plumbing check)
set -u
PY=${PY:-python3}; OUT=${OUT:-/tmp/devout}; W=/tmp/devwork; mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.devsite:$PWD${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WORKBENCH_PROGRESS=0 MPLBACKEND=Agg
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{
  el info; lscpu; echo; grep -m1 -o -E 'flags.*' /proc/cpuinfo | tr ' ' '\n' | grep -E 'amx|avx512|vnni' | tr '\n' ' '; echo
  $PY -c "import sys, numpy, torch, onnxruntime, transformers, Cython; print(sys.version); print('numpy', numpy.__version__, 'torch', torch.__version__, 'ort', onnxruntime.__version__, 'transformers', transformers.__version__, 'cython', Cython.__version__)"
  gcc --version | head -1; nproc
} > "$OUT/info.txt" 2>&1
$PY -c "import workbench.cli" 2>>"$OUT/info.txt" || { echo "workbench does not import here (is .devsite carried?)"; exit 1; }
el build; { time timeout 150 $PY setup.py -q build_ext --inplace --parallel 16; } > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
# two logical CPUs on different physical cores
CPUS=$(lscpu -p=CPU,CORE | grep -v '^#' | sort -t, -k2,2n -u | head -2 | cut -d, -f1 | paste -sd,)
[ -n "$CPUS" ] || CPUS=0,1; TS="taskset -c $CPUS"; command -v taskset >/dev/null || TS=""
el "cpus $CPUS ($TS)"
$PY - >> "$OUT/info.txt" 2>&1 <<'PYEOF'
import workbench_ext.cpu as c
print("features", {k: v for k, v in c.features().items() if v})
print("available", c.available_isas(), "active", c.active_isa())
print("clock GHz (measured)", round(c.measure_clock_ghz(), 2))
from workbench.runtime.kernels import kernel_report
print(kernel_report())
PYEOF
# which oneDNN implementation torch's _int_mm (the library kernel candidate) runs here, to tell
# whether it uses AMX tiles (on Zen 4 it logs gemm_api; results/bench/zen4-library)
DNNL_VERBOSE=1 $PY -c "import torch; a = torch.ones(128, 768, dtype=torch.int8); torch._int_mm(a, torch.ones(3072, 768, dtype=torch.int8).t())" 2>&1 | grep -m2 exec >> "$OUT/info.txt"
cat "$OUT/info.txt"
if [ "${QUICK:-0}" = 1 ]; then G="--quick"; B="--quick --threads 2"; TT=(-k "dense"); R=2; else G=""; B="--threads 2 --batch 1,8 --runs 5"; TT=(); R=11; fi
BUDGET=${BUDGET_S:-540}
# step NAME SECONDS: true when SECONDS more still fit the budget (else says it is skipped)
fits() { local used=$(( $(date +%s) - T0 )); if [ $(( used + $2 )) -le "$BUDGET" ]; then el "$1"; return 0; fi; echo "[${used}s] skip $1 (needs ${2}s)"; return 1; }
if grep -q amx_int8 /proc/cpuinfo && fits amx_ab 130; then
  OMP_NUM_THREADS=2 timeout 130 $TS $PY results/bench/emr-amx/amx_ab.py --rounds $R > "$OUT/amx_ab.txt" 2>&1; echo "rc=$?" >> "$OUT/amx_ab.txt"
  tail -15 "$OUT/amx_ab.txt"
fi
if fits bench 240; then
  timeout 240 $TS $PY -m workbench.cli bench --models distilbert $B --no-gemm \
    --engines ort-int8,wb-int8,wb-int8-sp70,wb-int8-sp80,wb-int8-sp90,wb-int8-tile90 \
    --out "$W/bench" > "$OUT/bench.log" 2>&1; echo "rc=$?" >> "$OUT/bench.log"
  tail -25 "$OUT/bench.log"
fi
if fits gemm 80; then
  timeout 80 $TS $PY -m workbench.bench.gemm --m 128 --k 768 --n 3072 --threads 1,2 $G --out "$W/gemm" > "$OUT/gemm.log" 2>&1; echo "rc=$?" >> "$OUT/gemm.log"
  tail -30 "$OUT/gemm.log"
fi
tar czf "$OUT/results.tgz" -C "$W" gemm bench 2>/dev/null
XD=""; $PY -c "import xdist" 2>/dev/null && XD="-n 14"
if fits tests 70; then
  timeout 70 $PY -m pytest -q -p no:cacheprovider $XD --basetemp=/tmp/wbt "${TT[@]}" \
    tests/test_kernels.py tests/test_kernel_ops.py tests/test_pair_bounded.py tests/test_attention.py \
    tests/test_attention_bf16.py tests/test_kernels_act7.py tests/test_pool.py tests/test_runtime_choice.py \
    tests/test_kernel_library.py \
    > "$OUT/tests.log" 2>&1; echo "rc=$?" >> "$OUT/tests.log"
  tail -15 "$OUT/tests.log"
fi
# where a forward's time goes, on the same two cores
if fits breakdown 60; then
  timeout 60 $TS $PY results/bench/emr-amx/forward_breakdown.py --threads 2 --reps 20 > "$OUT/breakdown.txt" 2>&1
fi
el done
