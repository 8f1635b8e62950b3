#!/usr/bin/env bash
# Builds the four harnesses and runs them (one thread each, nothing else should run): ~1 min.
# Usage from the repository root: bash results/bench/zen5-sparse-bound/run.sh > results/bench/zen5-sparse-bound/run-N.txt
set -euo pipefail
D=results/bench/zen5-sparse-bound; B=$(mktemp -d)
gcc -O2 -std=c11 $D/vnni_peak.c -o $B/vnni_peak
gcc -O2 -std=c11 -fopenmp -Iworkbench_ext $D/kernel_bound.c -o $B/kernel_bound -lm
gcc -O3 -std=c11 -fopenmp -Iworkbench_ext $D/epilogue_stride.c -o $B/epilogue_stride -lm
gcc -O2 -std=c11 -Iworkbench_ext $D/gelu_div.c -o $B/gelu_div -lm
echo "## $(date -u '+%F %H:%M UTC'), $(lscpu | sed -n 's/^Model name: *//p'), $(git rev-parse --short HEAD)"
echo "### VPDPBUSD throughput"; $B/vnni_peak
echo "### the 1x4 kernel's loop, one 64-row tile (G = 4), 90 % sparse"
for s in "256 3072" "768 3072" "1536 3072" "768 768" "3072 768"; do $B/kernel_bound $s; done
echo "### K chunks at 128 x 3072 x 768 (K N NC nch)"
for s in "3072 768 32 4" "3072 768 64 4" "3072 768 128 4" "3072 768 64 6"; do $B/kernel_bound $s | grep chunks; done
echo "### the column-major epilogue, 64 rows (N gelu ld)"
for s in "768 0 768" "2304 0 2304" "3072 0 3072" "3072 0 3088" "3072 1 3072" "3072 1 3088"; do $B/epilogue_stride $s; done
echo "### GELU"; $B/gelu_div
rm -rf "$B"
