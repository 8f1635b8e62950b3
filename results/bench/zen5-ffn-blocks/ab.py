"""A layer's FFN (input Linear, output Linear, LayerNorm) on all its rows at once against a few
rows at a time (`workbench_ext.encoder._set_ffn_block_rows`), on the same engine in one process,
taking turns (`workbench.bench.in_process.time_in_turns`).

    python results/bench/zen5-ffn-blocks/ab.py [rounds] [batches] [block sizes] > ab.txt

DistilBERT-base shape, sequence 128, 2 threads, the bench's engines. Each cell: a 0.1 s pause,
untimed calls for 30 ms, then `CALLS` timed calls. The logits of every variant are compared
with the default's first: the blocks must not change a bit."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from workbench.bench.in_process import bench_engine, time_in_turns  # noqa: E402

CALLS = 3
ENGINES = ("wb-int8", "wb-int8-sp90", "wb-int8-tile90")


def runners(engine, blocks):
    from workbench_ext import encoder

    def run_with(rows):
        def run(feed):
            encoder._set_ffn_block_rows(rows)
            try:
                return engine.run(feed)
            finally:
                encoder._set_ffn_block_rows(0)
        return run

    return {("all rows" if b == 0 else f"{b} rows"): run_with(b) for b in (0, *blocks)}


def main(rounds: int, batches: tuple[int, ...], blocks: tuple[int, ...]) -> None:
    print(f"rounds {rounds}, {CALLS} timed calls per cell; median ms per call, and the median of the "
          "per-round ratio all rows / blocked (> 1: blocks faster)")
    for batch in batches:
        for name in ENGINES:
            engine, feed = bench_engine(name, batch, 2)
            run = runners(engine, blocks)
            want = run["all rows"](feed)
            for label, fn in run.items():
                assert np.array_equal(fn(feed), want), f"{name} batch {batch}: {label} changed the logits"
            times = time_in_turns(run, [feed] * CALLS, rounds)
            ms = {k: np.array(v) / CALLS * 1e3 for k, v in times.items()}
            cells = [f"{k} {np.median(v):.2f} ms" + ("" if k == "all rows" else
                     f" ({np.median(ms['all rows'] / v):.3f}x)") for k, v in ms.items()]
            print(f"{name:16s} batch {batch}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15,
         tuple(int(b) for b in sys.argv[2].split(",")) if len(sys.argv) > 2 else (8,),
         tuple(int(b) for b in sys.argv[3].split(",")) if len(sys.argv) > 3 else (128, 256, 512))
