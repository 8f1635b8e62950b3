"""What a static batch-1 call costs before its first kernel: `Engine.__call__` of an earlier commit
(its Python checks, spec lookup and trace, then `Int8Encoder.classify_tokens`) against the current
one (`Int8Encoder.forward_call`: the checks in C), on the same engine in one process.

For each model: rounds alternating old / new (order flipped each round), each round 5 untimed
then 40 timed forwards on fresh random ids, the round's median; then, per variant, the median over
40 traced forwards of the time from the call to the pool's first job (`workbench_ext.pool.trace`)
and of that job's own time (the embedding gather, which waits for a worker still waking).
Usage: python results/bench/spr-amx/call-overhead/call_overhead.py [--base 3520651] [--rounds 10]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _old_engine_class(commit: str):
    src = subprocess.run(["git", "show", f"{commit}:workbench/runtime/engine.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "engine_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("engine_old", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Engine


def _models():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "emr-amx"))
    from forward_breakdown import _engine
    from workbench.bench.models import minilm
    from workbench.runtime import compile_model

    yield "DistilBERT-base, 90 % sparse (1x4), seq 128", _engine(0.9, (1, 4)), 128
    mini = compile_model(minilm(), quantize=True, kernel_choice="measure")
    yield "MiniLM-L6 (the default model's shape), seq 32", mini, 32
    yield "MiniLM-L6, seq 128", mini, 128


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="3520651")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    import workbench_ext.pool as pool
    from workbench.runtime.engine import Engine

    old_cls = _old_engine_class(args.base)
    # the old call on the current engine object: its __call__ and its one-call helper
    variants = {"old": (old_cls.__call__, old_cls._classify_in_one_call),
                "new": (Engine.__call__, Engine._classify_in_one_call)}
    rng = np.random.default_rng(0)
    for label, eng, seq in _models():
        mask = np.ones((1, seq), np.int64)
        med = {k: [] for k in variants}
        gap = {k: [] for k in variants}
        job0 = {k: [] for k in variants}
        for rnd in range(args.rounds):
            for name in (("old", "new") if rnd % 2 else ("new", "old")):
                Engine.__call__, Engine._classify_in_one_call = variants[name]
                for _ in range(5):
                    eng(rng.integers(1000, 20000, (1, seq)), mask)
                ts = []
                for _ in range(40):
                    ids = rng.integers(1000, 20000, (1, seq))
                    t = time.perf_counter()
                    eng(ids, mask)
                    ts.append(time.perf_counter() - t)
                med[name].append(np.median(ts) * 1e3)
        for name in variants:
            Engine.__call__, Engine._classify_in_one_call = variants[name]
            for _ in range(40):
                ids = rng.integers(1000, 20000, (1, seq))
                with pool.trace() as tr:
                    t0 = time.monotonic_ns()
                    eng(ids, mask)
                j = tr.jobs
                gap[name].append((j["start_ns"][0] - t0) / 1e3)
                job0[name].append((j["end_ns"][0] - j["start_ns"][0]) / 1e3)
        Engine.__call__, Engine._classify_in_one_call = variants["new"]
        o, n = np.array(med["old"]), np.array(med["new"])
        print(f"{label}: forward median of round medians old {np.median(o):.3f} ms, new {np.median(n):.3f} ms; "
              f"old/new per round {np.round(o / n, 3).tolist()}, median {np.median(o / n):.3f}")
        for name in variants:
            print(f"  {name}: call to first job {np.median(gap[name]):.1f} us, first job {np.median(job0[name]):.1f} us")


if __name__ == "__main__":
    main()
