"""A stage's speed, measured the same way for every stage: in a fresh worker process.

Measured inside the pipeline's own process, a stage's latency depends on what ran before it
(allocator state, warmed or oversubscribed thread pools, the training that just ended), so the
fifth stage of a run and the same model measured alone could disagree. `stage_speed` writes the
stage's model to a temporary folder (no pickles: a config and a state dict, or a runtime engine
folder) and measures it in `python -m workbench.pipeline.speed`
with the thread environment of `workbench bench`'s engine processes (`workbench.bench.processes.child_env`: the same
thread count as the pipeline, passive OpenMP waiting), one process per stage.

Beside every speed number the stage's metrics record how it was taken: `threads`, `isa` (the
workbench_ext kernels' dispatch level), `load_avg` (the machine's 1-minute load average as the
measurement started; above the thread count, other work competed for the cores) and
`speed_process` ("fresh", or "same" with `speed_note` saying why when the model could not be
handed to a worker, e.g. a model class of a plugin; the worker's copy must give the stage
model's logits on a probe input, or the speed is taken here too). `WORKBENCH_SPEED_PROCESS=same` measures in the pipeline's process (tests).
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

from workbench.evaluate import measure_speed, speed_inputs
from workbench.results import atomic_write_text

WORKER_TIMEOUT_S = 1800


def speed_context(model: Any = None) -> dict[str, Any]:
    """Threads, kernel ISA, load average of this process and the compiled model's kernels
    (`kernels`: kind -> Linears, None for a torch model), as recorded beside speed numbers."""
    from workbench.runtime.choice import kernels_of
    from workbench.runtime.kernels import active_isa

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"threads": torch.get_num_threads(), "isa": active_isa(),
            "load_avg": None if load is None else round(load, 2), "kernels": kernels_of(model)}


def measure_here(model: nn.Module, vocab_size: int, seq_len: int, batches: list[int], iters: int,
                 warmup: int) -> dict[str, Any]:
    """Latency and throughput per batch size, measured in this process, with its context."""
    out: dict[str, Any] = speed_context(model)
    for b in batches:
        s = measure_speed(model, vocab_size, seq_len, b, iters=iters, warmup=warmup)
        out[f"latency_ms_b{b}"], out[f"throughput_b{b}"] = s["latency_ms"], s["throughput"]
    return out


def _quantized_linears(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]


def _export(model: nn.Module, folder: Path) -> dict[str, Any]:
    """Write `model` for a worker, without pickling: a compiled runtime model as its engine folder;
    a Hugging Face model (structurally edited, dynamically int8-quantized or not) as its config
    plus its state dict, rebuilt in the worker from the config (edits replayed, the same Linear
    layers quantized on the same torch engine). Returns what the worker needs to know."""
    load = getattr(type(model), "load", None)
    if callable(getattr(model, "save", None)) and callable(load):
        # a model that saves itself and loads with `Class.load(folder)` (e.g. a compiled runtime model)
        model.save(folder / "engine")
        return {"kind": "saved", "loader": f"{type(model).__module__}:{type(model).__qualname__}"}
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "save_pretrained"):
        raise TypeError(f"{type(model).__name__} is neither a Hugging Face model nor a model with save() and Class.load()")
    quantized = _quantized_linears(model)  # (other kinds of layers fail to load in the worker: timed here)
    config.save_pretrained(folder / "config")
    torch.save(model.state_dict(), folder / "state.pt")
    return {"kind": "hf", "quantized": quantized, "engine": torch.backends.quantized.engine}


def _import(folder: Path, spec: dict[str, Any]) -> nn.Module:
    if spec["kind"] == "saved":
        import importlib

        module, qualname = spec["loader"].split(":")
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        return cls.load(folder / "engine")
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from workbench.models.edits import replay_edits

    config = AutoConfig.from_pretrained(str(folder / "config"), local_files_only=True)
    edits = list(getattr(config, "workbench_edits", None) or [])
    config.workbench_edits = []
    model = AutoModelForSequenceClassification.from_config(config)
    replay_edits(model, edits)  # the same shapes as the stage's model (as load_edited_model does)
    model.config.workbench_edits = edits
    if spec["quantized"]:  # the same Linear layers as torch dynamic int8 modules, on the same engine
        torch.backends.quantized.engine = spec["engine"]
        model = torch.ao.quantization.quantize_dynamic(model, set(spec["quantized"]), dtype=torch.qint8)
    missing, unexpected = model.load_state_dict(torch.load(folder / "state.pt", weights_only=True), strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"the rebuilt model does not fit the stage's weights: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    return model.eval()


@torch.no_grad()
def _probe(model: nn.Module, vocab_size: int, seq_len: int) -> list[float]:
    """Logits on one fixed input: the worker's model must be the stage's model."""
    return [float(x) for x in model(**speed_inputs(vocab_size, seq_len, seed=1)).logits.float().flatten()]


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
            how = _export(model, folder)
        except Exception as exc:  # a model of another kind: timed here, saying so
            note = f"the model could not be written for a worker ({type(exc).__name__}: {exc})"[:300]
        else:
            (folder / "spec.json").write_text(json.dumps({**settings, **how, "threads": threads}))
            note = _run_worker(folder, threads)
            if note is None:
                result = json.loads((folder / "result.json").read_text())
                probe = torch.tensor(result.pop("probe"))
                model.eval()
                if torch.allclose(probe, torch.tensor(_probe(model, vocab_size, seq_len)), atol=1e-4, rtol=1e-4):
                    return {**result, "speed_process": "fresh"}
                note = "the worker's copy of the model gave other logits than the stage's model"
    print(f"[workbench]   speed measured in the pipeline's process: {note}", flush=True)
    return {**measure_here(model, **settings), "speed_process": "same", "speed_note": note}


def _run_worker(folder: Path, threads: int) -> str | None:
    """Run the worker on `folder`; None when it wrote its result, else why not."""
    from workbench.bench.processes import child_env

    try:
        proc = subprocess.run([sys.executable, "-m", "workbench.pipeline.speed", str(folder)], env=child_env(threads),
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
    model = _import(folder, spec)
    out = measure_here(model, spec["vocab_size"], spec["seq_len"], spec["batches"], spec["iters"], spec["warmup"])
    out["probe"] = _probe(model, spec["vocab_size"], spec["seq_len"])
    atomic_write_text(folder / "result.json", json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
