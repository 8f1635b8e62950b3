"""One process of the pool-layout A/B (run.sh): ROUNDS rounds of the batch-1 forward on 2
threads, each round the round trip between the vCPUs, then 0.4 s of each engine (median ms).
Prints one line per round: trip ns, then ms per engine.
Usage: python rounds.py ROUNDS ENGINE..."""
import os, sys
from pathlib import Path
os.environ.setdefault("OMP_NUM_THREADS", "2")
from workbench.bench.in_process import bench_engine
from workbench.bench.placement import round_trip_ns
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from timing import median_ms  # noqa: E402  (the study's folder)

rounds, names = int(sys.argv[1]), sys.argv[2:]
eng = [bench_engine(n, 1) for n in names]
for r in range(rounds):
    cells = [f"{round_trip_ns():.0f}"]
    for e, feed in (eng if r % 2 == 0 else eng[::-1]):
        cells.append(f"{median_ms(lambda: e.run(feed)):.4f}")
    if r % 2:
        cells[1:] = cells[1:][::-1]
    print(" ".join(cells), flush=True)
