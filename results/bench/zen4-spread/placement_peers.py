"""What the far vCPU placement costs ONNX Runtime int8 and our engines, timed in the same windows.

For --seconds: windows of the cache-line round trip between the two vCPUs (pingpong.c), then the
batch-1 forward of DistilBERT-base (sequence 128, 2 threads) on each engine for 0.4 s (median),
in an order that rotates from window to window, then the round trip again; a window counts as
near (far) when both round trips are under (over) 150 ns, and is dropped when they differ. The
engines are set up as `workbench bench` sets them up (workbench.bench.engines, one process here):
ORT int8 in the graph / weight variant given (--ort, default opt-pt: the one that won the t=2 b=1
row of results/bench/zen4), wb-int8 and wb-int8-sp90.
Prints one line per window, then per engine the median per placement and far / near.
Usage: python results/bench/zen4-spread/placement_peers.py [--seconds 300] > placement_peers.txt
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from phases import pingpong_lib, placement, round_trip_ns  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--ort", default="opt-pt", help="the ORT int8 variant (plain-pt, plain-pc, opt-pt, opt-pc)")
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "2"
    import torch

    torch.set_num_threads(2)
    from workbench.bench.engines import ENGINES
    from workbench.bench.models import distilbert, prune

    names = [f"ort-int8-{a.ort}", "wb-int8", "wb-int8-sp90"]
    cache = Path(tempfile.mkdtemp())
    ids = torch.from_numpy(np.random.default_rng(0).integers(1000, 20000, size=(1, 128)))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    engines, feeds = {}, {}
    for name in names:
        eng, model = ENGINES[name](), distilbert()
        if eng.sparsity:         # as the bench's worker prepares a pruned engine's model
            prune(model, eng.sparsity, eng.block)
        eng.setup(model, 2, cache / name, "distilbert")
        engines[name], feeds[name] = eng, eng.feed(inputs)
        for _ in range(10):
            eng.run(feeds[name])
    lib = pingpong_lib()
    rows: dict[str, dict[str, list[float]]] = {"near": {n: [] for n in names}, "far": {n: [] for n in names}}
    print("pingpong_ns " + " ".join(f"{n}_ms" for n in names), flush=True)
    end, w = time.time() + a.seconds, 0
    while time.time() < end:
        before = round_trip_ns(lib)
        order = names[w % len(names):] + names[:w % len(names)]
        got = {}
        for name in order:
            ts, t1 = [], time.time()
            while time.time() - t1 < 0.4:
                t = time.perf_counter()
                engines[name].run(feeds[name])
                ts.append(time.perf_counter() - t)
            got[name] = float(np.median(ts)) * 1e3
        after = round_trip_ns(lib)
        w += 1
        place = placement(before, after)
        if place is None:
            continue
        for name in names:
            rows[place][name].append(got[name])
        print(f"{before:.0f} " + " ".join(f"{got[n]:.2f}" for n in names), flush=True)
    print(f"\nwindows: near {len(rows['near'][names[0]])}, far {len(rows['far'][names[0]])}")
    print("engine near_ms far_ms far/near")
    for name in names:
        near, far = rows["near"][name], rows["far"][name]
        if near and far:
            print(f"{name} {np.median(near):.2f} {np.median(far):.2f} {np.median(far) / np.median(near):.3f}")


if __name__ == "__main__":
    main()
