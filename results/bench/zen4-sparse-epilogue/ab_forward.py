"""Same-process A/B of the AVX-512 sparse epilogue's row stores (`workbench_ext.int8._set_sparse_epi_direct`):
whole DistilBERT-base forwards (seq 128, batch 1) of the bench's pruned engines, the two settings taking turns
round by round, which one first alternating (3 untimed + 5 timed forwards each), medians in ms. Appends its lines to ab-forward.txt.
`OMP_NUM_THREADS=T python ab_forward.py T ROUNDS ENGINE...`, e.g. 2 40 wb-int8-sp70 wb-int8-sp80 wb-int8-sp90."""
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from workbench.bench.worker import _Prepared
from workbench_ext import cpu, int8

nt, rounds, engines = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
P = {}
for e in engines:
    p = _Prepared({"model": "distilbert", "engine": e, "threads": nt, "seq_len": 128, "runs": 5, "batches": [1],
                   "warmup": 2, "cache_dir": "/tmp/ab/cache"})
    assert not p.error, p.error
    P[e] = (p, p.eng.feed(p.inputs[1]))
res = {(e, v): [] for e in P for v in (0, 1)}
for i in range(rounds):
    for e, (p, f) in P.items():
        for v in ((0, 1) if i % 2 == 0 else (1, 0)):   # which goes first alternates
            int8._set_sparse_epi_direct(v)
            for _ in range(3):
                p.run(f)
            t = time.perf_counter()
            for _ in range(5):
                p.run(f)
            res[(e, v)].append((time.perf_counter() - t) / 5)
int8._set_sparse_epi_direct(1)
model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.machine())
lines = [f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} {model} "
         f"isa={cpu.active_isa()} threads={nt} rounds={rounds} load={os.getloadavg()[0]:.2f}"]
for e in P:
    a, b = (statistics.median(res[(e, v)]) * 1e3 for v in (0, 1))
    lines.append(f"{e} t={nt}: row buffer {a:.3f} ms, direct stores {b:.3f} ms, speed-up {a / b:.3f}x")
print("\n".join(lines))
with open(Path(__file__).with_name("ab-forward.txt"), "a") as out:
    out.write("\n".join(lines) + "\n")
