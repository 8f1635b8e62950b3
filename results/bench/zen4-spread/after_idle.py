"""A batch-1 forward timed as `workbench bench` times it: after a pause, one untimed call, then the
timed one; with the pool's default spin (workers sleep ~0.2 ms after their last chunk, so they
sleep through the pause) and with workers spinning through the pause, in turns.

Why: in a 15-round bench (bench15/) the 90 %-sparse engine had 3 rounds at 2-3x its median while
ORT int8 and dense wb-int8 had none that large. Prints, per mode, the median timed call, the
worker's share of the chunks (pool.trace) and every call as ms/share.
Usage: python results/bench/zen4-spread/after_idle.py [--sparsity 0.9] [--rounds 16] [--pause 0.1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from phases import one_warm_engine  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--pause", type=float, default=0.1)
    a = p.parse_args()
    engine, ids, mask, _ = one_warm_engine(a.sparsity)
    from workbench_ext import pool

    default_spin = pool.spin_us()
    spins = {"default": default_spin, "spin": int(a.pause * 3e6)}
    out: dict[str, list[tuple[float, float]]] = {m: [] for m in spins}
    try:
        for _ in range(a.rounds):
            for mode, spin in spins.items():
                pool.set_spin_us(spin)
                time.sleep(a.pause)
                engine(ids, mask)
                with pool.trace() as t:
                    s = time.perf_counter()
                    engine(ids, mask)
                    ms = (time.perf_counter() - s) * 1e3
                out[mode].append((ms, t.jobs["by_workers"].sum() / max(1, t.jobs["chunks"].sum())))
    finally:
        pool.set_spin_us(default_spin)
    for mode, rows in out.items():
        print(f"{mode} (spin {spins[mode]} us): median {np.median([r[0] for r in rows]):.2f} ms, "
              f"worker share {np.median([r[1] for r in rows]):.2f}")
        print("   " + " ".join(f"{ms:.1f}/{sh:.2f}" for ms, sh in rows))


if __name__ == "__main__":
    main()
