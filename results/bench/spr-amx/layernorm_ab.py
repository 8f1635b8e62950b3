"""The layer loop's LayerNorms on AVX-512, two rows at a time, against the AVX2 row function, in
one process, taking turns (`workbench_ext.encoder._set_layernorm_avx2_rows`).

DistilBERT-base shape (`workbench.bench.models.distilbert`), dense and pruned to 90 % in 1x4
blocks, compiled as the bench's wb-int8 engines, sequence 128, 2 threads. Before timing, the
logits of the two variants are compared: they must be the same bits. Each round times ROUND_CALLS
forwards of one variant, then of the other; the ratio is AVX2 / AVX-512 per round (> 1: the
AVX-512 rows are faster).

    python results/bench/spr-amx/layernorm_ab.py [rounds] > results/bench/spr-amx/layernorm_ab.txt
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

ROUND_CALLS = {1: 40, 8: 6}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    from workbench.bench.models import distilbert
    from workbench.recipes.prune.magnitude import magnitude_prune_
    from workbench.runtime import compile_model
    from workbench_ext import cpu, encoder

    print(f"isa {cpu.active_isa()}, 2 threads, {rounds} rounds; median ms per forward of each variant, "
          "and the median (min-max) of the per-round ratio AVX2 rows / AVX-512 two rows")
    for sparsity in (0.0, 0.9):
        model = distilbert()
        if sparsity:
            magnitude_prune_(model, sparsity, block=(1, 4))
        engine = compile_model(model, quantize=True, kernel_choice="measure")
        engine.num_threads = 2
        for batch in (1, 8):
            ids = np.random.default_rng(0).integers(1000, 20000, size=(batch, 128))
            mask = np.ones((batch, 128), np.int64)

            def timed(avx2_rows: int) -> float:
                encoder._set_layernorm_avx2_rows(avx2_rows)
                engine(ids, mask)
                times = []
                for _ in range(ROUND_CALLS[batch]):
                    t = time.perf_counter()
                    engine(ids, mask)
                    times.append(time.perf_counter() - t)
                return float(np.median(times)) * 1e3

            encoder._set_layernorm_avx2_rows(1)
            before = engine(ids, mask)
            encoder._set_layernorm_avx2_rows(0)
            if not np.array_equal(before, engine(ids, mask)):
                raise SystemExit("the two LayerNorms gave different logits")
            a, b = [], []
            for _ in range(rounds):
                a.append(timed(1))
                b.append(timed(0))
            encoder._set_layernorm_avx2_rows(0)
            r = np.array(a) / np.array(b)
            name = "dense" if not sparsity else "90 % (1x4)"
            print(f"{name:11s} batch {batch}: AVX2 rows {np.median(a):.2f} ms, AVX-512 two rows {np.median(b):.2f} ms; "
                  f"ratio {np.median(r):.3f} ({r.min():.3f}-{r.max():.3f}); logits the same bits")


if __name__ == "__main__":
    main()
