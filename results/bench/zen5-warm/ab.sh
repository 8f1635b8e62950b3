#!/usr/bin/env bash
# A/B of the bench's warm-up within a turn: one untimed call (WORKBENCH_BENCH_WARM_S=0, the bench
# before 2026-12-06) against untimed calls for 30 ms (the new default), benches alternating, each
# the item-7 shape (DistilBERT, 2 threads, batch 1) with ORT int8, dense and 90 % sparse.
# Usage: bash results/bench/zen5-warm/ab.sh [pairs] [folder]
set -eu
PAIRS=${1:-3}; DIR=${2:-results/bench/zen5-warm}; PY=${PY:-.venv/bin/python}
for i in $(seq 1 "$PAIRS"); do
  for w in 0 0.03; do
    out=/tmp/warm_ab/$i-$w
    WORKBENCH_BENCH_WARM_S=$w WORKBENCH_PROGRESS=0 $PY -m workbench.cli bench --models distilbert --threads 2 \
      --batch 1 --runs 7 --no-gemm --engines ort-int8,wb-int8,wb-int8-sp90,wb-int8-tile90 --out "$out" > "$out.log" 2>&1
    echo "pair $i warm_s=$w $(date -u +%H:%M:%S)"; grep -E '^\| (ort-int8|\*\*wb)' "$out/README.md" | head -4
  done
done | tee "$DIR/ab.txt"
