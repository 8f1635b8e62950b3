"""One engine's benchmark process: `python -m workbench.bench.worker SPEC.json RESULT.json`.

The parent (`workbench bench`) starts one of these per (model, engine, threads) with the thread
environment already set (OMP_NUM_THREADS, the OpenMP waiting policy, ...), so engines never share
thread pools or global state. The result file holds one row per batch size; a failure is a row
with status "failed" and the error, never an exception escaping to the parent.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any


SLOW_S = 2.0  # a warm-up call slower than this caps the timed runs at MIN_RUNS_SLOW
MIN_RUNS_SLOW = 5


def _error(exc: BaseException) -> str:
    msg = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    return msg[:400]


def run_spec(spec: dict[str, Any]) -> list[dict[str, Any]]:
    import numpy as np
    import torch

    from workbench.bench.engines import ENGINES
    from workbench.bench.models import load_model, make_inputs, prune

    threads = int(spec["threads"])
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # pragma: no cover - already set
        pass
    try:  # BLAS (NumPy) and OpenMP pools in this process, on top of the environment variables
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except Exception:  # pragma: no cover
        pass

    base = {"model": spec["model"], "engine": spec["engine"], "threads": threads,
            "seq_len": int(spec["seq_len"]), "runs": int(spec["runs"])}
    rows: list[dict[str, Any]] = []
    batches = [int(b) for b in spec["batches"]]
    eng = ENGINES[spec["engine"]]()
    base["sparsity"] = eng.sparsity
    try:
        model = load_model(spec["model"], spec.get("model_path"))  # a saved stage folder, or a built-in
        if eng.sparsity:
            prune(model, eng.sparsity)
        inputs, refs = {}, {}
        with torch.inference_mode():  # torch fp32 reference logits, before any engine touches the model
            for b in batches:
                inputs[b] = make_inputs(model, b, int(spec["seq_len"]))
                refs[b] = model(**inputs[b]).logits.float().numpy()
        eng.shape = (min(batches), int(spec["seq_len"]))  # engines that tune themselves do it here
        eng.batches = tuple(batches)
        t0 = time.perf_counter()
        eng.setup(model, threads, Path(spec["cache_dir"]), spec["model"])
        setup_s = time.perf_counter() - t0
    except Exception as exc:
        traceback.print_exc()
        return [{**base, "batch": b, "status": "failed", "error": f"setup: {_error(exc)}"} for b in batches]

    for b in batches:
        row = {**base, "batch": b, "setup_s": round(setup_s, 2), "notes": eng.notes}
        try:
            feed = eng.feed(inputs[b])
            runs, slow = int(spec["runs"]), False
            for i in range(int(spec["warmup"])):
                t = time.perf_counter()
                eng.run(feed)
                if i == 0 and time.perf_counter() - t > SLOW_S:
                    slow = True  # e.g. bf16 without native bf16: the minimum 5 runs, one warm-up
                    break
            if slow:
                runs = min(runs, MIN_RUNS_SLOW)
            times, out = [], None
            for _ in range(runs):
                t = time.perf_counter()
                out = eng.run(feed)
                times.append(time.perf_counter() - t)
            out = np.asarray(out, dtype=np.float32)
            ref = refs[b]
            if out.shape != ref.shape:
                raise ValueError(f"logits shape {out.shape} != reference {ref.shape}")
            med, lo, hi = statistics.median(times), min(times), max(times)
            row.update({
                "status": "ok", "error": "",
                "runs": runs, "latency_ms_median": med * 1e3, "latency_ms_min": lo * 1e3, "latency_ms_max": hi * 1e3,
                "samples_per_s": b / med, "samples_per_s_min": b / hi, "samples_per_s_max": b / lo,
                "max_abs_err_vs_torch_fp32": float(np.abs(out - ref).max()),
                "argmax_agree_vs_torch_fp32": float(np.mean(out.argmax(-1) == ref.argmax(-1))),
            })
        except Exception as exc:
            traceback.print_exc()
            row.update({"status": "failed", "error": _error(exc)})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    rows = run_spec(spec)
    tmp = Path(argv[1] + ".tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
