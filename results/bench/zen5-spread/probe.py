"""What else the host does while our engines' batch-1 forwards slow down on a 2-vCPU VM.

For --seconds, windows of:
- each vCPU's VNNI throughput with both busy at once (vnni_probe.c: a fixed count of independent
  vpdpbusd on two pinned threads; vpdpbusd per ns, ~8.3 = 2 a cycle at ~4.1 GHz when nothing
  else shares the host core), before and after the engines;
- the cache-line round trip between the two vCPUs (`workbench.bench.placement`, as the bench
  records it before every round);
- the hypervisor's steal time on each vCPU during the window (/proc/stat, 10 ms ticks);
- the batch-1 forward of DistilBERT-base (sequence 128, 2 threads) on ORT int8 (plain graph,
  per-tensor weights: the variant that won batch 1 in results/bench/zen5-repeat), wb-int8,
  wb-int8-sp90 and wb-int8-tile90, 0.3 s each (median and worst), in an order that rotates.
- the read bandwidth of the slower vCPU, both reading at once, from L1, L2, L3 and memory
  (vnni_probe.c's bw_probe);
Prints one line per window, then the windows split at the median of the slower vCPU's probe.
Usage: python results/bench/zen5-spread/probe.py [--seconds 300] [--batch 1] [--window 0.3] > probe.txt
"""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from workbench.bench.placement import cpu_pair, round_trip_ns  # noqa: E402


def probe_lib():
    out = Path(tempfile.mkdtemp()) / "libvnniprobe.so"
    subprocess.run(["gcc", "-O2", "-mavx512f", "-mavx512vnni", "-shared", "-fPIC", "-o", str(out),
                    str(Path(__file__).with_name("vnni_probe.c")), "-lpthread"], check=True)
    lib = ctypes.CDLL(str(out))
    lib.vnni_probe.argtypes = [ctypes.c_long, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)]
    lib.bw_probe.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long,
                             ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)]
    return lib


def vnni_rate(lib, rounds: int = 100_000) -> tuple[float, float]:
    """vpdpbusd per ns on vCPU 0 and vCPU 1, both busy (~12 ms at full speed)."""
    a, b = ctypes.c_double(), ctypes.c_double()
    lib.vnni_probe(rounds, ctypes.byref(a), ctypes.byref(b))
    return 16 * rounds / a.value, 16 * rounds / b.value


def _aligned(nbytes: int) -> np.ndarray:
    a = np.ones(nbytes + 64, np.uint8)  # ones, not zeros: zero pages would all map to one page
    off = (-a.ctypes.data) % 64
    return a[off:off + nbytes]


BW_SIZES = {"l1": (32 << 10, 20000), "l2": (512 << 10, 2000), "l3": (8 << 20, 60), "dram": (64 << 20, 4)}
"""Buffer per vCPU and repeats for each read-bandwidth probe: 32 KB (a Zen 5 core's L1 is 48 KB), half the 1 MB L2 of a Zen 5 core,
8 MB (the vCPUs' share of a 32 MB L3), 64 MB (memory)."""


def read_bandwidth(lib, bufs: dict) -> dict[str, float]:
    """GB/s of the slower vCPU, both reading their own buffer at once, per BW_SIZES level."""
    out = {}
    for level, (nbytes, reps) in BW_SIZES.items():
        a, b = ctypes.c_double(), ctypes.c_double()
        lib.bw_probe(bufs[level][0].ctypes.data, bufs[level][1].ctypes.data, nbytes, reps, ctypes.byref(a), ctypes.byref(b))
        out[level] = min(a.value, b.value)
    return out


def steal_ticks() -> list[int]:
    """Steal time of cpu0 and cpu1 so far, in /proc/stat ticks (10 ms)."""
    rows = [line.split() for line in Path("/proc/stat").read_text().splitlines() if line.startswith("cpu")]
    return [int(r[8]) for r in rows if r[0] in ("cpu0", "cpu1")]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--window", type=float, default=0.3, help="seconds of forwards per engine per window")
    a = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "2"
    import torch

    torch.set_num_threads(2)
    from workbench.bench.engines import ENGINES
    from workbench.bench.models import distilbert, prune

    names = ["ort-int8-plain-pt", "wb-int8", "wb-int8-sp90", "wb-int8-tile90"]
    cache = Path(tempfile.mkdtemp())
    ids = torch.from_numpy(np.random.default_rng(0).integers(1000, 20000, size=(a.batch, 128)))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    engines, feeds = {}, {}
    for name in names:
        eng, model = ENGINES[name](), distilbert()
        if eng.sparsity:
            prune(model, eng.sparsity, eng.block)
        eng.setup(model, 2, cache / name, "distilbert")
        engines[name], feeds[name] = eng, eng.feed(inputs)
        for _ in range(10):
            eng.run(feeds[name])
    pair, vp = cpu_pair(), probe_lib()
    bufs = {level: (_aligned(n), _aligned(n)) for level, (n, _) in BW_SIZES.items()}
    rows = []
    print("probe0_before probe1_before probe0_after probe1_after pingpong_ns steal0_ms steal1_ms "
          "l1_gbs l2_gbs l3_gbs dram_gbs "
          + " ".join(f"{n}_ms {n}_worst_ms" for n in names), flush=True)
    end, w = time.time() + a.seconds, 0
    while time.time() < end:
        s0 = steal_ticks()
        before = vnni_rate(vp)
        rt = round_trip_ns(pair)
        order = names[w % len(names):] + names[:w % len(names)]
        got = {}
        for name in order:
            ts, t1 = [], time.time()
            while time.time() - t1 < a.window:
                t = time.perf_counter()
                engines[name].run(feeds[name])
                ts.append(time.perf_counter() - t)
            got[name] = (float(np.median(ts)) * 1e3, max(ts) * 1e3)
        after = vnni_rate(vp)
        bw = read_bandwidth(vp, bufs)
        s1 = steal_ticks()
        w += 1
        row = [*before, *after, rt, 10 * (s1[0] - s0[0]), 10 * (s1[1] - s0[1]), bw["l1"], bw["l2"], bw["l3"], bw["dram"]]
        row += [x for n in names for x in got[n]]
        rows.append(row)
        print(" ".join(f"{x:.2f}" for x in row), flush=True)
    r = np.array(rows)
    E = 11  # first engine column
    slow_probe = np.minimum(np.minimum(r[:, 0], r[:, 1]), np.minimum(r[:, 2], r[:, 3]))
    cut = np.median(slow_probe)
    print(f"\nwindows {len(r)}; slower vCPU's probe (min of 4): median {cut:.2f}, "
          f"min {slow_probe.min():.2f}, max {slow_probe.max():.2f} vpdpbusd/ns; "
          f"steal in {int(((r[:, 5] + r[:, 6]) > 0).sum())} windows")
    print("engine | median ms, windows with the slower probe >= median | < median | ratio")
    for i, n in enumerate(names):
        col = r[:, E + 2 * i]
        hi, lo = col[slow_probe >= cut], col[slow_probe < cut]
        print(f"{n} | {np.median(hi):.2f} | {np.median(lo):.2f} | {np.median(lo) / np.median(hi):.3f}")
    print("correlation of each engine's window median with the slower VNNI probe, the read bandwidths, "
          "and ORT's median:")
    for i, n in enumerate(names):
        col = r[:, E + 2 * i]
        cors = [np.corrcoef(col, x)[0, 1] for x in (slow_probe, r[:, 7], r[:, 8], r[:, 9], r[:, 10], r[:, E])]
        print(f"{n}: vnni {cors[0]:+.2f}, l1 {cors[1]:+.2f}, l2 {cors[2]:+.2f}, l3 {cors[3]:+.2f}, dram {cors[4]:+.2f}, "
              f"ort {cors[5]:+.2f}; "
              f"window medians {col.min():.2f}-{col.max():.2f} ms, range {(col.max() - col.min()) / np.median(col):.0%}")
    print("range of the probes over the windows: " + ", ".join(
        f"{name} {x.min():.1f}-{x.max():.1f}" for name, x in
        (("vnni", slow_probe), ("l1", r[:, 7]), ("l2", r[:, 8]), ("l3", r[:, 9]), ("dram", r[:, 10]))))


if __name__ == "__main__":
    main()
