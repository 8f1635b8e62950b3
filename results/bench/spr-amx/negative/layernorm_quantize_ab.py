"""LayerNorm + quantization fusion A/B (README, third session). Needs `layernorm_quantize_fusion.patch` applied to
2501383 and the extension rebuilt (it adds encoder._set_fuse_layernorm_quantize); the fusion was not kept.
Usage: python results/bench/spr-amx/negative/layernorm_quantize_ab.py"""
import sys, time, numpy as np
sys.path.insert(0, "results/bench/emr-amx")
from workbench_ext import encoder
import workbench_ext.pool as pool
def run(label, e, B, S, rounds=12):
    rng = np.random.default_rng(0); mask = np.ones((B, S), np.int64)
    jobs = {}
    for on in (False, True):
        encoder._set_fuse_layernorm_quantize(on)
        with pool.trace() as t: e(rng.integers(1000, 20000, (B, S)), mask)
        jobs[on] = len(t.jobs)
    res = {False: [], True: []}
    for rnd in range(rounds):
        for on in ((False, True) if rnd % 2 else (True, False)):
            encoder._set_fuse_layernorm_quantize(on)
            for _ in range(5): e(rng.integers(1000, 20000, (B, S)), mask)
            ts = []
            for _ in range(30):
                ids = rng.integers(1000, 20000, (B, S))
                t0 = time.perf_counter(); e(ids, mask); ts.append(time.perf_counter() - t0)
            res[on].append(np.median(ts) * 1e3)
    encoder._set_fuse_layernorm_quantize(True)
    a, b = np.array(res[False]), np.array(res[True])
    print(f"{label} b{B} s{S}: jobs {jobs[False]} -> {jobs[True]}; separate {np.median(a):.3f} ms, fused {np.median(b):.3f} ms; separate/fused per round median {np.median(a / b):.3f} (range {np.min(a/b):.3f}-{np.max(a/b):.3f})", flush=True)
if __name__ == "__main__":
    from forward_breakdown import _engine
    from workbench.bench.models import minilm
    from workbench.runtime import compile_model
    run("DistilBERT dense", _engine(0.0), 1, 128)
    run("DistilBERT 90% 1x4", _engine(0.9, (1, 4)), 1, 128)
    mini = compile_model(minilm(), quantize=True, kernel_choice="measure")
    run("MiniLM-L6", mini, 1, 32)
    run("MiniLM-L6", mini, 1, 128)
    run("DistilBERT dense", _engine(0.0), 8, 128, rounds=6)
