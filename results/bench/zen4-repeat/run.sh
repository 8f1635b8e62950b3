#!/usr/bin/env bash
# The runtime issue's item-7 protocol: four back-to-back runs of the same bench on one machine,
# nothing else running. Each run writes <folder>/run<k>/ (engines.csv, README.md; folder: the first
# argument, default this script's folder); then `python results/bench/zen4-repeat/summarize.py
# [folder]` compares the four runs' medians.
set -eu
here=${1:-$(cd "$(dirname "$0")" && pwd)}
mkdir -p "$here"
for k in 1 2 3 4; do
  date -u +"run $k start %H:%M:%S"
  .venv/bin/workbench bench --models distilbert --threads 2 --batch 1,8 --no-gemm \
    --engines ort-int8,wb-int8,wb-int8-sp70,wb-int8-sp80,wb-int8-sp90 --out "$here/run$k" > /dev/null
done
date -u +"done %H:%M:%S"
