#!/usr/bin/env bash
# Fresh processes one after another, engines interleaved: ORT int8 (plain graph, per-tensor: the
# configuration that won most rounds here), our dense engine and our 90 %-sparse engine with
# every Linear on one kernel (no timed choice). Usage: bash run.sh BATCH PROCESSES > out.txt
B=${1:-8}; N=${2:-8}; PY=${PY:-.venv/bin/python}
for i in $(seq "$N"); do
  for e in "ort-int8-plain-pt" "wb-int8 dense" "wb-int8-sp90 sparse"; do
    $PY results/bench/zen5-process-level/one_process.py "$B" $e 2>&1 | grep median
  done
done
