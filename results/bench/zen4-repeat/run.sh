#!/usr/bin/env bash
# The runtime issue's item-7 protocol: four back-to-back runs of the same bench on one machine,
# nothing else running. Each run writes run<k>/ (engines.csv, README.md); then
# `python results/bench/zen4-repeat/summarize.py` compares the four runs' medians.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
for k in 1 2 3 4; do
  date -u +"run $k start %H:%M:%S"
  .venv/bin/workbench bench --models distilbert --threads 2 --batch 1,8 --no-gemm \
    --engines ort-int8,wb-int8,wb-int8-sp70,wb-int8-sp80,wb-int8-sp90 --out "$here/run$k" > /dev/null
done
date -u +"done %H:%M:%S"
