#!/usr/bin/env bash
# Transparent huge pages on (always) against the machine's default (madvise) for the process
# A/B of process_ab.py, six pairs, alternating. Needs root (writes /sys/kernel/mm/...) and puts
# the default back at the end. Output: thp_ab.txt.
cd "$(dirname "$0")/../../.."
for i in 1 2 3 4 5 6; do for m in madvise always; do echo $m > /sys/kernel/mm/transparent_hugepage/enabled; echo -n "$m: "; .venv/bin/python results/bench/zen5-spread/process_ab.py 8 2>&1 | tail -2 | tr '\n' ' '; echo; done; done
echo madvise > /sys/kernel/mm/transparent_hugepage/enabled
