"""A stage's speed, measured the same way for every stage: in a fresh worker process.

Measured inside the pipeline's own process, a stage's latency depends on what ran before it
(allocator state, warmed or oversubscribed thread pools, the training that just ended), so the
fifth stage of a run and the same model measured alone could disagree. `stage_speed` writes the
stage's model to a temporary folder and measures it in `python -m workbench.pipeline.speed`
with the thread environment of `workbench bench`'s engine processes (`_child_env`: the same
thread count as the pipeline, passive OpenMP waiting), one process per stage.

Beside every speed number the stage's metrics record how it was taken: `threads`, `isa` (the
workbench_ext kernels' dispatch level), `load_avg` (the machine's 1-minute load average as the
measurement started; above the thread count, other work competed for the cores) and
`speed_process` ("fresh", or "same" with `speed_note` saying why when the model could not be
handed to a worker). `WORKBENCH_SPEED_PROCESS=same` measures in the pipeline's process (tests).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.evaluate import measure_speed

WORKER_TIMEOUT_S = 1800


def speed_context() -> dict[str, Any]:
    """Threads, kernel ISA and load average of this process, as recorded beside speed numbers."""
    from workbench.runtime.kernels import active_isa

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"threads": torch.get_num_threads(), "isa": active_isa(),
            "load_avg": None if load is None else round(load, 2)}


def measure_here(model: nn.Module, vocab_size: int, seq_len: int, batches: list[int], iters: int,
                 warmup: int) -> dict[str, Any]:
    """Latency and throughput per batch size, measured in this process, with its context."""
    out: dict[str, Any] = speed_context()
    for b in batches:
        s = measure_speed(model, vocab_size, seq_len, b, iters=iters, warmup=warmup)
        out[f"latency_ms_b{b}"], out[f"throughput_b{b}"] = s["latency_ms"], s["throughput"]
    return out


def _export(model: nn.Module, folder: Path) -> str:
    """Write `model` for a worker: a compiled runtime model as its engine folder, anything else
    (Hugging Face, edited, torch-quantized) as one pickled module. Returns the format."""
    if hasattr(model, "workbench_engine") and callable(getattr(model, "save", None)):
        model.save(folder / "engine")
        return "engine"
    torch.save(model, folder / "model.pt")
    return "module"


def _import(folder: Path, kind: str) -> nn.Module:
    if kind == "engine":
        from workbench.runtime.module import EngineModule

        return EngineModule.load(folder / "engine")
    return torch.load(folder / "model.pt", weights_only=False)  # our own file, written just now


def stage_speed(model: nn.Module, vocab_size: int, seq_len: int, batches: list[int], iters: int,
                warmup: int) -> dict[str, Any]:
    """The stage's speed numbers and their context, from a fresh worker process (see module doc);
    measured here instead, saying why, when the model cannot be handed over or the worker fails."""
    settings = {"vocab_size": vocab_size, "seq_len": seq_len, "batches": list(batches), "iters": iters,
                "warmup": warmup}
    if os.environ.get("WORKBENCH_SPEED_PROCESS", "fresh") == "same":
        return {**measure_here(model, **settings), "speed_process": "same"}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="workbench-speed-") as tmp:
        folder = Path(tmp)
        try:
            kind = _export(model, folder)
        except Exception as exc:  # e.g. a module holding something that does not pickle
            note = f"the model could not be written for a worker ({type(exc).__name__}: {exc})"[:300]
        else:
            (folder / "spec.json").write_text(json.dumps({**settings, "kind": kind, "threads": threads}))
            note = _run_worker(folder, threads)
            if note is None:
                return {**json.loads((folder / "result.json").read_text()), "speed_process": "fresh"}
    print(f"[workbench]   speed measured in the pipeline's process: {note}", flush=True)
    return {**measure_here(model, **settings), "speed_process": "same", "speed_note": note}


def _run_worker(folder: Path, threads: int) -> str | None:
    """Run the worker on `folder`; None when it wrote its result, else why not."""
    from workbench.bench.cli import _child_env

    try:
        proc = subprocess.run([sys.executable, "-m", "workbench.pipeline.speed", str(folder)], env=_child_env(threads),
                              capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"the speed worker took over {WORKER_TIMEOUT_S} s"
    except OSError as exc:
        return f"the speed worker could not start ({exc})"
    if proc.returncode == 0 and (folder / "result.json").exists():
        return None
    tail = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()][-1:]
    return f"the speed worker exited with code {proc.returncode}" + (f": {tail[0][:300]}" if tail else "")


def main(argv: list[str] | None = None) -> int:
    """`python -m workbench.pipeline.speed FOLDER`: measure FOLDER's model per spec.json."""
    folder = Path((sys.argv[1:] if argv is None else argv)[0])
    spec = json.loads((folder / "spec.json").read_text())
    torch.set_num_threads(int(spec["threads"]))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # pragma: no cover - already set
        pass
    model = _import(folder, spec["kind"])
    out = measure_here(model, spec["vocab_size"], spec["seq_len"], spec["batches"], spec["iters"], spec["warmup"])
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(out))
    os.replace(tmp, folder / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
