"""Interleaved timing: the engines of one (model, threads) group take turns, one run each.

On a shared 2-core VM the machine's speed drifts by tens of percent over a minute (other tenants,
clock changes). Measured one engine after another, a ratio then compares two different machines:
ORT int8 alone ranged 61-88 samples/s across back-to-back benches here. So `workbench bench`
starts one process per engine (`workbench.bench.worker --serve`: own thread pools, own state),
sets them up one at a time (setup is CPU-heavy, and our engine times its kernels during it), then
for each batch size runs round after round in which every engine does one timed run (each
preceded by untimed runs of its own for `worker.WARM_S`, at least one, so its caches and the host
are as warm as in a back-to-back run, for a fast engine as for a slow one). A
drift then slows every engine of a round alike, and the same-run ratios hold still. Engines not
running wait on a pipe; each turn starts after a pause (`QUIET_S`) in which the previous engine's
spinning threads go to sleep. Before each round the parent times a cache line's round trip
between the first two CPUs (`workbench.bench.placement`): the rows record it per round, so a
spread that comes from the host moving our vCPUs between dies shows as such.
"""
from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from workbench.bench import placement
from workbench.bench.processes import exit_reason
from workbench.bench.worker import MIN_RUNS_SLOW, QUIET_S, SLOW_S


class _Worker:
    """One engine process in serve mode, driven one command line at a time."""

    def __init__(self, spec: dict[str, Any], work: Path, tag: str, env: dict[str, str], cwd: str,
                 timeout: float) -> None:
        self.spec = spec
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.spec_f, self.result_f = work / f"{tag}.json", work / f"{tag}.result.json"
        self.log_f = work / f"{tag}.log"
        self.spec_f.write_text(json.dumps(spec))
        self.error: str | None = None
        self.runs: dict[int, int] = {}
        with open(self.log_f, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workbench.bench.worker", str(self.spec_f), str(self.result_f), "--serve"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, cwd=cwd, text=True, bufsize=1)
        first = self._read()
        if first is not None and first != "READY":
            self.error = first.removeprefix("FAILED ").strip() or "setup failed"

    @property
    def alive(self) -> bool:
        return self.error is None

    def _read(self) -> str | None:
        """The next reply line, or None (the process died or ran past its time: `error` says)."""
        left = self.deadline - time.monotonic()
        ready = select.select([self.proc.stdout], [], [], max(left, 0.0))[0] if left > 0 else []
        if not ready:
            self.error = f"engine process timed out after {self.timeout:.0f} s"
            self.proc.kill()
            return None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.error = exit_reason(self.proc.returncode, self.log_f)
            return None
        return line.strip()

    def ask(self, command: str) -> str | None:
        if not self.alive:
            return None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.error = "engine process closed its input"
            return None
        return self._read()

    def finish(self) -> list[dict[str, Any]] | str:
        """Its result rows (after `done`), or why there are none."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("done\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=max(self.deadline - time.monotonic(), 5.0))
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self.result_f.exists():  # written at `done`, or by a setup that failed
            return json.loads(self.result_f.read_text())
        return self.error or "engine process wrote no result"


def run_group(specs: list[dict[str, Any]], work: Path, tags: list[str], env: dict[str, str], cwd: str,
              timeout: float, on_progress: Callable[[str], None] = lambda text: None) -> list[list[dict[str, Any]] | str]:
    """Set up every spec's engine (one at a time), then time them interleaved; per spec its
    result rows or the reason it has none. All specs share model, threads, batches and runs."""
    workers = []
    for spec, tag in zip(specs, tags):
        on_progress(f"setting up {spec['engine']}")
        workers.append(_Worker(spec, work, tag, env, cwd, timeout))
    runs, warmup = int(specs[0]["runs"]), int(specs[0]["warmup"])
    trips: dict[int, list[float | None]] = {}
    for b in specs[0]["batches"]:
        for w in workers:
            w.runs[b] = runs
            if warmup:
                reply = w.ask(f"warm {b} {warmup}")
                if reply and reply.startswith("OK") and float(reply.split()[1]) > SLOW_S:
                    w.runs[b] = min(runs, MIN_RUNS_SLOW)  # e.g. bf16 without native bf16
        for r in range(runs):
            on_progress(f"batch {b}: round {r + 1}/{runs}")
            k = r % len(workers)  # who goes first rotates
            trips.setdefault(b, []).append(placement.round_trip_ns())  # where the host has our CPUs now
            for w in workers[k:] + workers[:k]:
                if r < w.runs[b]:
                    time.sleep(QUIET_S)
                    reply = w.ask(f"time {b}")
                    if reply is not None and reply.startswith("ERR"):
                        w.runs[b] = 0  # this batch failed; the worker's row says why
    return [_with_trips(w.finish(), trips) for w in workers]


def _with_trips(rows: list[dict[str, Any]] | str, trips: dict[int, list[float | None]]) -> list[dict[str, Any]] | str:
    """An engine's rows with each batch's per-round round trips (`placement.FIELD`) added."""
    if isinstance(rows, str):
        return rows
    for row in rows:
        got = trips.get(int(row.get("batch", -1)), [])
        if any(t is not None for t in got):
            row[placement.FIELD] = placement.format_trips(got)
    return rows
