"""Timing callables against each other in one process, taking turns (the results scripts' A/B
runs: `results/bench/zen4-packed/`, `results/bench/zen4-dynamic/`)."""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence


def time_in_turns(runners: dict[str, Callable[[Any], Any]], batches: Sequence[Any], rounds: int,
                  pause_s: float = 0.1, warm_s: float | None = None) -> dict[str, list[float]]:
    """Seconds per pass over `batches`, per runner and round. Each round every runner takes one
    turn -- a `pause_s` pause (the previous runner's threads stop spinning), untimed calls on the
    first batch for `warm_s` (default: the bench's `worker.WARM_S`; at least one call), then all
    of `batches` timed -- in an order rotated by one each round, so a drift of a shared machine's
    speed hits every runner alike."""
    from workbench.bench.worker import warm_up

    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            time.sleep(pause_s)
            warm_up(lambda: runners[name](batches[0]), warm_s)
            t0 = time.perf_counter()
            for b in batches:
                runners[name](b)
            times[name].append(time.perf_counter() - t0)
    return times


def bench_engine(name: str, batch: int = 1, threads: int = 2, seq_len: int = 128,
                 model: str = "distilbert", warm_calls: int = 3) -> tuple[Any, Any]:
    """Engine `name` of `workbench bench` (`workbench.bench.engines.ENGINES`) set up as the bench's
    worker sets it up, for a results script's in-process A/B: the model (`load_model`) pruned to
    the engine's sparsity, kernels chosen at `batch`, inputs from `make_inputs`, then `warm_calls`
    untimed calls. Returns (engine, feed): time `engine.run(feed)`. The caller sets the thread
    environment (OMP_NUM_THREADS) before importing torch, as the bench does."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    import torch

    from workbench.bench.engines import ENGINES
    from workbench.bench.models import load_model, make_inputs, prune

    torch.set_num_threads(threads)
    eng, net = ENGINES[name](), load_model(model)
    if eng.sparsity:
        prune(net, eng.sparsity, eng.block)
    eng.shape, eng.batches = (batch, seq_len), (batch,)
    # the engine's exported files (ORT: ~0.6 GB of ONNX graphs) go when the process ends: a
    # results script that sets up engines in many processes would otherwise fill the disk
    cache = tempfile.mkdtemp(prefix="wb-bench-engine.")
    atexit.register(shutil.rmtree, cache, True)
    eng.setup(net, threads, Path(cache), model)
    feed = eng.feed(make_inputs(net, batch, seq_len))
    for _ in range(warm_calls):
        eng.run(feed)
    return eng, feed
