"""One engine's benchmark process: `python -m workbench.bench.worker SPEC.json RESULT.json`.

The parent (`workbench bench`) starts one of these per (model, engine, threads) with the thread
environment already set (OMP_NUM_THREADS, the OpenMP waiting policy, ...), so engines never share
thread pools or global state. The result file holds one row per batch size; a failure is a row
with status "failed" and the error, never an exception escaping to the parent.
"""
from __future__ import annotations

import faulthandler
import json
import os
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from workbench.bench.spread import RUNS_FIELD, format_runs
from workbench.results import write_json


FAIL_ENV = "WORKBENCH_BENCH_FAIL_ENGINE"
"""Test hook: the engine named here raises in every run (tests/test_bench.py checks that a
failing engine becomes a failed row and the others go on)."""
SLOW_S = 2.0  # a warm-up call slower than this caps the timed runs at MIN_RUNS_SLOW
MIN_RUNS_SLOW = 5


def exit_reason(returncode: int | None, log: Path) -> str:
    """Why an engine process ended without a result: its exit code (a signal by name) and the
    last line of its log, or, after a crash, the two innermost Python frames faulthandler
    printed (where in the engine the process died: a compiled kernel has no frame of its own,
    so the innermost is the Python code that called it)."""
    code = f"{returncode}"
    if returncode is not None and returncode < 0:
        try:
            code += f" ({signal.Signals(-returncode).name})"
        except ValueError:
            pass
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    fatal = next((i for i, ln in enumerate(lines) if ln.startswith("Fatal Python error")), None)
    if fatal is not None:
        frames = [ln.strip() for ln in lines[fatal:] if ln.strip().startswith("File ")][:2]
        detail = lines[fatal].strip() + (f", in {' < '.join(frames)}" if frames else "")
    else:
        detail = lines[-1] if lines else ""
    return f"engine process exited with code {code}" + (f": {detail[:300]}" if detail else "")


def _error(exc: BaseException) -> str:
    msg = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    return msg[:400]


class _Prepared:
    """An engine set up on its model: inputs and torch fp32 reference logits per batch."""

    def __init__(self, spec: dict[str, Any]) -> None:
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
        self.base = {"model": spec["model"], "engine": spec["engine"], "threads": threads,
                     "seq_len": int(spec["seq_len"]), "runs": int(spec["runs"])}
        self.batches = [int(b) for b in spec["batches"]]
        self.eng = ENGINES[spec["engine"]]()
        self.base["sparsity"] = self.eng.sparsity
        self.error: str | None = None
        self.inputs: dict[int, Any] = {}
        self.refs: dict[int, Any] = {}
        self.setup_s = 0.0
        self._fail = os.environ.get(FAIL_ENV) == spec["engine"]  # read once: not in the timed calls
        try:
            model = load_model(spec["model"], spec.get("model_path"))  # a saved stage folder, or a built-in
            if self.eng.sparsity:
                prune(model, self.eng.sparsity, self.eng.block)
            with torch.inference_mode():  # torch fp32 reference logits, before any engine touches the model
                for b in self.batches:
                    self.inputs[b] = make_inputs(model, b, int(spec["seq_len"]))
                    self.refs[b] = model(**self.inputs[b]).logits.float().numpy()
            self.eng.shape = (min(self.batches), int(spec["seq_len"]))  # engines that tune themselves do it here
            self.eng.batches = tuple(self.batches)
            t0 = time.perf_counter()
            self.eng.setup(model, threads, Path(spec["cache_dir"]), spec["model"])
            self.setup_s = time.perf_counter() - t0
        except Exception as exc:
            traceback.print_exc()
            self.error = f"setup: {_error(exc)}"

    def run(self, feed: Any) -> Any:
        if self._fail:
            raise RuntimeError(f"injected failure ({FAIL_ENV})")
        return self.eng.run(feed)

    def failed_rows(self) -> list[dict[str, Any]]:
        return [{**self.base, "batch": b, "status": "failed", "error": self.error} for b in self.batches]

    def row(self, b: int, times: list[float], out: Any, error: str | None) -> dict[str, Any]:
        """The result row of batch b from its timed runs and its last output."""
        import numpy as np

        row = {**self.base, "batch": b, "setup_s": round(self.setup_s, 2), "notes": self.eng.notes}
        if error is not None:
            return {**row, "status": "failed", "error": error}
        try:
            out = np.asarray(out, dtype=np.float32)
            ref = self.refs[b]
            if out.shape != ref.shape:
                raise ValueError(f"logits shape {out.shape} != reference {ref.shape}")
            med, lo, hi = statistics.median(times), min(times), max(times)
            row.update({
                "status": "ok", "error": "",
                "runs": len(times), "latency_ms_median": med * 1e3, "latency_ms_min": lo * 1e3,
                "latency_ms_max": hi * 1e3, RUNS_FIELD: format_runs(times),
                "samples_per_s": b / med, "samples_per_s_min": b / hi, "samples_per_s_max": b / lo,
                "max_abs_err_vs_torch_fp32": float(np.abs(out - ref).max()),
                "argmax_agree_vs_torch_fp32": float(np.mean(out.argmax(-1) == ref.argmax(-1))),
            })
        except Exception as exc:
            row.update({"status": "failed", "error": _error(exc)})
        return row


def run_spec(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Set up, then every batch: warm-ups and timed runs back to back in this process."""
    prep = _Prepared(spec)
    if prep.error:
        return prep.failed_rows()
    rows: list[dict[str, Any]] = []
    for b in prep.batches:
        times: list[float] = []
        out, error = None, None
        try:
            feed = prep.eng.feed(prep.inputs[b])
            runs, slow = int(spec["runs"]), False
            for i in range(int(spec["warmup"])):
                t = time.perf_counter()
                prep.run(feed)
                if i == 0 and time.perf_counter() - t > SLOW_S:
                    slow = True  # e.g. bf16 without native bf16: the minimum 5 runs, one warm-up
                    break
            if slow:
                runs = min(runs, MIN_RUNS_SLOW)
            for _ in range(runs):
                t = time.perf_counter()
                out = prep.run(feed)
                times.append(time.perf_counter() - t)
        except Exception as exc:
            traceback.print_exc()
            error = _error(exc)
        rows.append(prep.row(b, times, out, error))
    return rows


def serve(spec: dict[str, Any], result: Path, commands: Any, replies: Any) -> None:
    """Interleaved mode (`workbench.bench.interleave`): set up, say READY, then answer the
    parent's commands one line each -- `warm B N` (N untimed calls: `OK <first call s>`),
    `time B` (one untimed call, then one timed: `T <s>`), `done` (write the rows, exit) -- so
    the parent can alternate single runs of every engine under the same machine conditions."""
    prep = _Prepared(spec)

    def reply(text: str) -> None:
        replies.write(text + "\n")
        replies.flush()

    if prep.error:
        write_json(result, prep.failed_rows())
        reply("FAILED " + prep.error)
        return
    feeds: dict[int, Any] = {}
    times: dict[int, list[float]] = {b: [] for b in prep.batches}
    outs: dict[int, Any] = {}
    errors: dict[int, str] = {}
    reply("READY")
    for line in commands:
        cmd = line.split()
        if not cmd or cmd[0] == "done":
            break
        b = int(cmd[1])
        try:
            if b in errors:
                raise RuntimeError(errors[b])
            if b not in feeds:
                feeds[b] = prep.eng.feed(prep.inputs[b])
            if cmd[0] == "warm":
                first = None
                for _ in range(int(cmd[2])):
                    t = time.perf_counter()
                    outs[b] = prep.run(feeds[b])
                    first = time.perf_counter() - t if first is None else first
                reply(f"OK {first or 0.0:.6f}")
            else:  # time: the call before it keeps this engine's caches as a back-to-back run has them
                prep.run(feeds[b])
                t = time.perf_counter()
                outs[b] = prep.run(feeds[b])
                times[b].append(time.perf_counter() - t)
                reply(f"T {times[b][-1]:.6f}")
        except Exception as exc:
            traceback.print_exc()
            errors[b] = errors.get(b) or _error(exc)
            reply("ERR " + errors[b])
    write_json(result, [prep.row(b, times[b], outs.get(b), errors.get(b) or (None if times[b] else "no timed run"))
                    for b in prep.batches])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    faulthandler.enable()   # a crash in a kernel leaves its Python stack in the log (exit_reason)
    spec = json.loads(Path(argv[0]).read_text())
    if "--serve" in argv[2:]:
        # the protocol keeps this process's original stdout; everything else printed (by us or by
        # libraries, Python or C) goes to stderr, the log
        replies = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        serve(spec, Path(argv[1]), sys.stdin, replies)
        return 0
    write_json(Path(argv[1]), run_spec(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
