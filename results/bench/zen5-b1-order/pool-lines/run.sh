#!/usr/bin/env bash
# Pool-layout A/B in alternating processes: the tree at BASE (a worktree of the commit before
# the change, built) against this checkout, PROCS processes each, ROUNDS rounds per process.
# Usage: BASE=/tmp/wt-base bash run.sh OUTDIR [PROCS] [ROUNDS]
set -eu
out=$1; procs=${2:-8}; rounds=${3:-15}; here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd); mkdir -p "$out"
for k in $(seq 1 "$procs"); do
  for side in base new; do
    tree=$root; [ $side = base ] && tree=$BASE
    (cd "$tree" && PYTHONPATH=$tree "$root/.venv/bin/python" "$here/rounds.py" "$rounds" wb-int8 wb-int8-sp90) \
      | sed "s/^/$side $k /" >> "$out/rounds.txt"
  done
done
