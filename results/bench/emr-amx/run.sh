#!/usr/bin/env bash
# One prepared run on a borrowed machine (the device tool's 16-core host): what CPU it is, build
# the extension there, the GEMM microbenchmark and the engine bench pinned to 2 physical cores
# (the issue's 2-thread shape), the kernel tests on every ISA the CPU has, then the forward's
# breakdown and (on AMX) the dense kernel's A/B. Each step is time-boxed and leaves its log in
# $OUT (8 files at most come back), so a run cut short still returns what it finished.
# Needs .devsite/ (datasets, dill, multiprocess copied from .venv) carried beside the tree; the
# whole run took ~5.5 min there, plus ~2 min for the last two steps.
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
el build; { time timeout 200 $PY setup.py -q build_ext --inplace --parallel 16; } > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
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
if [ "${QUICK:-0}" = 1 ]; then G="--quick"; B="--quick --threads 2"; TT=(-k "dense"); else G=""; B="--threads 2 --batch 1,8 --runs 7"; TT=(); fi
el gemm
timeout 120 $TS $PY -m workbench.bench.gemm --m 128 --k 768 --n 3072 --threads 1,2 $G --out "$W/gemm" > "$OUT/gemm.log" 2>&1; echo "rc=$?" >> "$OUT/gemm.log"
tail -40 "$OUT/gemm.log"
el bench
timeout 300 $TS $PY -m workbench.cli bench --models distilbert $B --no-gemm \
  --engines ort-int8,wb-int8,wb-int8-sp70,wb-int8-sp80,wb-int8-sp90,wb-int8-tile90,wb-int8-bf16attn,wb-int8-onednn \
  --out "$W/bench" > "$OUT/bench.log" 2>&1; echo "rc=$?" >> "$OUT/bench.log"
tail -40 "$OUT/bench.log"
tar czf "$OUT/results.tgz" -C "$W" gemm bench 2>/dev/null
el tests
XD=""; $PY -c "import xdist" 2>/dev/null && XD="-n 14"
timeout ${TEST_S:-150} $PY -m pytest -q -p no:cacheprovider $XD --basetemp=/tmp/wbt "${TT[@]}" \
  tests/test_kernels.py tests/test_kernel_ops.py tests/test_pair_bounded.py tests/test_attention.py \
  tests/test_attention_bf16.py tests/test_kernels_act7.py tests/test_pool.py tests/test_runtime_choice.py \
  tests/test_kernel_library.py \
  > "$OUT/tests.log" 2>&1; echo "rc=$?" >> "$OUT/tests.log"
tail -15 "$OUT/tests.log"
# where a forward's time goes, and (on AMX) the dense kernel's A/B, on the same two cores
el breakdown
timeout 150 $TS $PY results/bench/emr-amx/forward_breakdown.py --threads 2 --reps 20 > "$OUT/breakdown.txt" 2>&1
if grep -q amx_int8 /proc/cpuinfo; then
  el amx_ab
  OMP_NUM_THREADS=2 timeout 150 $TS $PY results/bench/emr-amx/amx_ab.py --rounds 11 > "$OUT/amx_ab.txt" 2>&1
fi
el done
