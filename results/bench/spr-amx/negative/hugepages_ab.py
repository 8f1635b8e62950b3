"""Huge pages A/B (README, third session): engine A on 2 MB pages (MADV_COLLAPSE of every large anonymous mapping after it
is built), engine B built after it on 4 KB pages, forwards taking turns; then the embedding gather job of each.
Usage: python results/bench/spr-amx/negative/hugepages_ab.py 0.9"""
import sys, time, ctypes, numpy as np
sys.path.insert(0, "results/bench/emr-amx")
from forward_breakdown import _engine
libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25
def collapse_all(minbytes=4 << 20):
    n = ok = 0; tot = 0
    for line in open("/proc/self/maps"):
        parts = line.split()
        a, b = (int(x, 16) for x in parts[0].split("-"))
        if len(parts) > 5 and parts[5] not in ("",) : continue   # anonymous only
        if "rw" not in parts[1] or b - a < minbytes: continue
        lo = (a + (2 << 20) - 1) & ~((2 << 20) - 1); hi = b & ~((2 << 20) - 1)
        if hi <= lo: continue
        n += 1
        libc.madvise(lo, hi - lo, MADV_HUGEPAGE)
        r = libc.madvise(lo, hi - lo, MADV_COLLAPSE)
        if r == 0: ok += 1; tot += hi - lo
        else: print("collapse failed", ctypes.get_errno(), (hi - lo) >> 20, "MB")
    print("regions", n, "collapsed", ok, tot >> 20, "MB")
sp = float(sys.argv[1]) if len(sys.argv) > 1 else 0.9
A = _engine(sp, (1, 4))
collapse_all()
print([l for l in open("/proc/meminfo") if "AnonHuge" in l])
B = _engine(sp, (1, 4))
rng = np.random.default_rng(0)
mask = np.ones((1, 128), np.int64)
for e in (A, B):
    for _ in range(10): e(rng.integers(1000, 20000, (1, 128)), mask)
ta, tb = [], []
for r in range(60):
    ids = rng.integers(1000, 20000, (1, 128))
    for e, t in ((A, ta), (B, tb)) if r % 2 else ((B, tb), (A, ta)):
        t0 = time.perf_counter(); e(ids, mask); t.append(time.perf_counter() - t0)
ta, tb = np.array(ta) * 1e3, np.array(tb) * 1e3
print(f"huge A median {np.median(ta):.3f} ms  4K B median {np.median(tb):.3f} ms  ratio B/A {np.median(tb)/np.median(ta):.3f}; paired {np.median(tb/ta):.3f}")
import workbench_ext.pool as pool
for name, e in (("huge", A), ("4K", B), ("huge", A), ("4K", B)):
    f, j0, j1 = [], [], []
    for r in range(20):
        ids = rng.integers(1000, 20000, (1, 128))
        with pool.trace() as t:
            t0 = time.monotonic_ns(); e(ids, mask)
        j = t.jobs
        f.append((j["start_ns"][0] - t0) / 1e3); j0.append((j["end_ns"][0] - j["start_ns"][0]) / 1e3)
        j1.append((j["end_ns"][1] - j["start_ns"][1]) / 1e3)
    print(name, "first gap", np.median(f), "job0", np.median(j0), "job1", np.median(j1))
