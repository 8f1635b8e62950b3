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
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from workbench.bench.after_pause import FIELD as AFTER_PAUSE_FIELD, median_ms as after_pause_ms
from workbench.bench.spread import RUNS_FIELD, SHARES_FIELD, format_runs, format_shares
from workbench.bench.variants import variant_note
from workbench.results import write_json


FAIL_ENV = "WORKBENCH_BENCH_FAIL_ENGINE"
"""Test hook: the engine named here raises in every run (tests/test_bench.py checks that a
failing engine becomes a failed row and the others go on)."""
QUIET_S = 0.1
"""Pause before each turn (`workbench.bench.interleave`) and, within a turn, before each variant
of an engine that has several (`BenchEngine.variants`). An engine's worker threads keep spinning
after its run: ONNX Runtime with spinning on (its default, the peer's configuration) burned
36-40 ms of CPU in the 100 ms after a run here, which stole a core from whichever engine ran next
(wb-int8 measured 0.45x instead of ~1.2x). torch's OpenMP threads and our kernels' pool spin
~0.2 ms."""
WARM_S = float(os.environ.get("WORKBENCH_BENCH_WARM_S", "0.03"))
"""Within a turn, untimed calls go on until this long after the first one began (at least one
call; an engine slower than this makes just the one), then comes the timed call. A fixed number
of untimed calls warmed a fast engine for less time than a slow one, and after a pause an engine
needs a few milliseconds to get back to its back-to-back speed: timed at the second call, our
90 %-sparse DistilBERT (3.2 ms a forward) read 6 % and the 16x64-tile one 10 % slower than after
30 ms, ORT int8 (11 ms) 1 % (both measured in the same turns: results/bench/zen5-warm). The
environment variable is the A/B's hook."""


def warm_up(call: Any, warm_s: float | None = None) -> float:
    """A turn's untimed calls: `call()` until `warm_s` (default `WARM_S`, read at call time) after
    the first one began, at least once. Returns the first call's seconds (after a pause: the
    `after_pause` latency)."""
    warm_s = WARM_S if warm_s is None else warm_s
    t = time.perf_counter()
    call()
    first = time.perf_counter() - t
    while time.perf_counter() - t < warm_s:
        call()
    return first


SLOW_S = 2.0  # a warm-up call slower than this caps the timed runs at MIN_RUNS_SLOW
MIN_RUNS_SLOW = 5


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

    @property
    def variants(self) -> tuple[str, ...]:
        """The engine's variants, or ("",) for an engine that is one configuration."""
        return tuple(self.eng.variants) or ("",)

    def warm(self, feed: Any, calls: int) -> float:
        """`calls` untimed calls of every variant; the slowest first call (seconds)."""
        first = 0.0
        for v in self.variants:
            if v:
                self.eng.use(v)
            for i in range(calls):
                t = time.perf_counter()
                self.run(feed)
                first = max(first, time.perf_counter() - t) if i == 0 else first
        return first

    def turn(self, feed: Any, k: int) -> dict[str, tuple[float, Any, float | None, float]]:
        """One timed turn: untimed calls for `WARM_S` (at least one: so the caches and the host
        are as warm as in a back-to-back run), then a timed one; for an engine with variants
        each variant does this in turn, a pause before each but the first, who goes first
        rotating with `k`. Variant -> (seconds, output, the timed call's
        `BenchEngine.worker_share`, the first untimed call's seconds: every turn follows a
        pause, `after_pause`)."""
        vs = self.variants
        order = vs[k % len(vs):] + vs[:k % len(vs)]
        got = {}
        for i, v in enumerate(order):
            if v:
                self.eng.use(v)
            if i:
                time.sleep(QUIET_S)
            first = warm_up(lambda: self.run(feed))
            t = time.perf_counter()
            out = self.run(feed)
            got[v] = (time.perf_counter() - t, out, self.eng.worker_share(), first)
        return got

    def failed_rows(self) -> list[dict[str, Any]]:
        return [{**self.base, "batch": b, "status": "failed", "error": self.error} for b in self.batches]

    def row(self, b: int, times: dict[str, list[float]], outs: dict[str, Any], error: str | None,
            shares: dict[str, list[float | None]] | None = None,
            firsts: dict[str, list[float]] | None = None) -> dict[str, Any]:
        """The result row of batch b from each variant's timed runs and last output (variant ""
        for an engine without variants); with variants, the row is the one with the best median.
        `shares`: each timed run's `BenchEngine.worker_share`, in run order; `firsts`: each
        turn's first call after its pause (seconds; interleaved timing only)."""
        import numpy as np

        row = {**self.base, "batch": b, "setup_s": round(self.setup_s, 2), "notes": self.eng.notes}
        timed = {v: t for v, t in times.items() if t}
        if error is None and not timed:
            error = "no timed run"
        if error is not None:
            return {**row, "status": "failed", "error": error}
        medians = {v: statistics.median(t) for v, t in timed.items()}
        best = min(medians, key=medians.__getitem__)
        if best:
            row["variant"] = best
            row["notes"] = "; ".join(x for x in (
                variant_note(b, best, {v: m * 1e3 for v, m in medians.items()}),
                self.eng.notes, self.eng.variant_notes.get(best, "")) if x)
        times_b, out = timed[best], outs.get(best)
        try:
            out = np.asarray(out, dtype=np.float32)
            ref = self.refs[b]
            if out.shape != ref.shape:
                raise ValueError(f"logits shape {out.shape} != reference {ref.shape}")
            med, lo, hi = medians[best], min(times_b), max(times_b)
            row.update({
                "status": "ok", "error": "",
                "runs": len(times_b), "latency_ms_median": med * 1e3, "latency_ms_min": lo * 1e3,
                "latency_ms_max": hi * 1e3, RUNS_FIELD: format_runs(times_b),
                "samples_per_s": b / med, "samples_per_s_min": b / hi, "samples_per_s_max": b / lo,
                "max_abs_err_vs_torch_fp32": float(np.abs(out - ref).max()),
                "argmax_agree_vs_torch_fp32": float(np.mean(out.argmax(-1) == ref.argmax(-1))),
            })
            got = (shares or {}).get(best) or []
            if got and all(x is not None for x in got):
                row[SHARES_FIELD] = format_shares(got)
            row[AFTER_PAUSE_FIELD] = after_pause_ms((firsts or {}).get(best) or [])
        except Exception as exc:
            row.update({"status": "failed", "error": _error(exc)})
        return row


def run_spec(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Set up, then every batch: warm-ups and timed runs back to back in this process (an engine
    with variants: each variant's, one variant after another)."""
    prep = _Prepared(spec)
    if prep.error:
        return prep.failed_rows()
    rows: list[dict[str, Any]] = []
    for b in prep.batches:
        times: dict[str, list[float]] = {}
        shares: dict[str, list[float | None]] = {}
        outs: dict[str, Any] = {}
        error = None
        try:
            feed = prep.eng.feed(prep.inputs[b])
            for v in prep.variants:
                if v:
                    prep.eng.use(v)
                runs, times[v], shares[v] = int(spec["runs"]), [], []
                for i in range(int(spec["warmup"])):
                    t = time.perf_counter()
                    prep.run(feed)
                    if i == 0 and time.perf_counter() - t > SLOW_S:
                        runs = min(runs, MIN_RUNS_SLOW)  # e.g. bf16 without native bf16: one warm-up
                        break
                for _ in range(runs):
                    t = time.perf_counter()
                    outs[v] = prep.run(feed)
                    times[v].append(time.perf_counter() - t)
                    shares[v].append(prep.eng.worker_share())
        except Exception as exc:
            traceback.print_exc()
            error = _error(exc)
        rows.append(prep.row(b, times, outs, error, shares))
    return rows


def serve(spec: dict[str, Any], result: Path, commands: Any, replies: Any) -> None:
    """Interleaved mode (`workbench.bench.interleave`): set up, say READY, then answer the
    parent's commands one line each -- `warm B N` (N untimed calls of every variant: `OK <slowest
    first call s>`), `time B` (one turn, `_Prepared.turn`: `T <s>`, the fastest variant's),
    `done` (write the rows, exit) -- so the parent can alternate single runs of every engine
    under the same machine conditions."""
    prep = _Prepared(spec)

    def reply(text: str) -> None:
        replies.write(text + "\n")
        replies.flush()

    if prep.error:
        write_json(result, prep.failed_rows())
        reply("FAILED " + prep.error)
        return
    feeds: dict[int, Any] = {}
    times: dict[int, dict[str, list[float]]] = {b: {v: [] for v in prep.variants} for b in prep.batches}
    shares: dict[int, dict[str, list[float | None]]] = {b: {v: [] for v in prep.variants} for b in prep.batches}
    firsts: dict[int, dict[str, list[float]]] = {b: {v: [] for v in prep.variants} for b in prep.batches}
    outs: dict[int, dict[str, Any]] = {b: {} for b in prep.batches}
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
                reply(f"OK {prep.warm(feeds[b], int(cmd[2])):.6f}")
            else:
                got = prep.turn(feeds[b], len(times[b][prep.variants[0]]))
                for v, (s, out, share, first) in got.items():
                    times[b][v].append(s)
                    shares[b][v].append(share)
                    firsts[b][v].append(first)
                    outs[b][v] = out
                reply(f"T {min(x[0] for x in got.values()):.6f}")
        except Exception as exc:
            traceback.print_exc()
            errors[b] = errors.get(b) or _error(exc)
            reply("ERR " + errors[b])
    write_json(result, [prep.row(b, times[b], outs[b], errors.get(b), shares[b], firsts[b]) for b in prep.batches])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    faulthandler.enable()   # a crash in a kernel leaves its Python stack in the log (processes.exit_reason)
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
