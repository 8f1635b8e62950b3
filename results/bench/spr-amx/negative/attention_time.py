"""The fused fp32 attention alone, 12 heads x 128 x 64 (q scaled by 1/sqrt(d)), min and p25 of 400 calls on 1 and 2 threads
(README, third session). Usage: python results/bench/spr-amx/negative/attention_time.py"""
import time, numpy as np
from workbench_ext.attention import attention


def inputs(B=1, nh=12, S=128, d=64):
    """q, k, v (views of one fused QKV output, as the engine passes them) and a zero mask."""
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((B * S, 3 * nh * d)).astype(np.float32); qkv[:, :nh * d] *= d ** -0.5
    v3 = qkv.reshape(B, S, 3, nh, d)
    q = v3[:, :, 0].transpose(0, 2, 1, 3); k = v3[:, :, 1].transpose(0, 2, 3, 1); v = v3[:, :, 2].transpose(0, 2, 1, 3)
    return q, k, v, np.zeros((B, S), np.float32)


def main():
    q, k, v, m = inputs()
    out = []
    for nt in (1, 2):
        for _ in range(20): attention(q, k, v, m, num_threads=nt)
        ts = []
        for _ in range(400):
            t = time.perf_counter(); attention(q, k, v, m, num_threads=nt); ts.append(time.perf_counter() - t)
        out.append(f"t{nt} min {min(ts)*1e6:.0f} p25 {np.percentile(ts, 25)*1e6:.0f}")
    print(" | ".join(out))


if __name__ == "__main__":
    main()
