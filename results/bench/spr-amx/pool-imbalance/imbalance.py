"""Where a batch-1 DistilBERT forward's two threads wait (2 threads, 128 tokens; dense and 90 % in 1x4
blocks, kernel_choice "measure"): with trace_thread_ends.patch applied (a diagnostic, not in the
pool), the pool's trace records per job when the caller ran out of chunks and when the worker did,
in place of the chunk counts. Per job, over 40 traced forwards after 20 warm ones: the job's time,
both threads' finish times (from the job's start), and the median time one thread sat idle at the
job's end; per forward, the span, the jobs' total, the gaps between jobs and the idle total.
Run from the repository root after `git apply` of the patch and a rebuild; output: imbalance.txt."""
import sys, numpy as np
sys.path.insert(0, "results/bench/emr-amx")
from forward_breakdown import _engine
import workbench_ext.pool as pool
rng = np.random.default_rng(0)
ids = rng.integers(1000, 20000, (1, 128)).astype(np.int64); mask = np.ones_like(ids)
for name, sp, blk in (("dense", 0, (1, 4)), ("sp90", 0.9, (1, 4))):
    eng = _engine(sp, blk)
    for _ in range(20): eng(ids, mask)
    recs = []
    for _ in range(40):
        with pool.trace() as t: eng(ids, mask)
        recs.append(t.jobs.copy())
    n = min(len(r) for r in recs)
    J = np.stack([r[:n] for r in recs])  # [fw, job]
    dur = (J["end_ns"] - J["start_ns"]) / 1e3
    caller = J["chunks"] / 1e3; worker = J["by_workers"] / 1e3
    fin = np.maximum(caller, np.where(worker < 0, 0, worker))
    first = np.minimum(caller, np.where(worker < 0, caller, worker))
    wait = fin - first   # one thread idle at the end
    fwd = (J["end_ns"][:, -1] - J["start_ns"][:, 0]) / 1e3
    gaps = (J["start_ns"][:, 1:] - J["end_ns"][:, :-1]) / 1e3
    print(f"{name}: {n} jobs, forward span median {np.median(fwd):.0f} us; sum of job times {np.median(dur.sum(1)):.0f}; gaps {np.median(gaps.sum(1)):.0f}; end imbalance {np.median(wait.sum(1)):.0f} us ({np.median(wait.sum(1)/fwd)*100:.1f} %)")
    md = np.median(dur, 0); mw = np.median(wait, 0); mc = np.median(caller,0); mwk = np.median(worker,0)
    for j in range(n):
        print(f"  job {j:2d}: {md[j]:6.1f} us, caller done {mc[j]:6.1f}, worker done {mwk[j]:6.1f}, idle at end {mw[j]:5.1f}")
