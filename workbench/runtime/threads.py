"""Threads for the runtime's kernels: their thread count (`default_threads`, `kernel_threads`),
NumPy's BLAS held to one thread for the attention matmuls (`attention_blas_threads`), and the
Python thread pool that spreads the attention heads over the cores (`parallel_run`). `kernels.py`
re-exports these.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator


# --------------------------------------------------------------------------------------------
# attention matmuls: NumPy BLAS, single-threaded
# --------------------------------------------------------------------------------------------
_BLAS_CTL: Any = None


def attention_blas_threads() -> Any:
    """Context manager: NumPy's BLAS limited to 1 thread for the attention matmuls.

    There is no attention kernel in workbench_ext; QK^T and PV are many small GEMMs
    ([S, d] x [d, S] per head) where a multi-threaded OpenBLAS spends far more time waking and
    spinning threads (which then fight our kernels' threads for the cores) than computing: 2 threads
    measured up to 100x slower than 1 on a busy 2-core machine. Costs ~20 us per use."""
    global _BLAS_CTL
    if _BLAS_CTL is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CTL = ThreadpoolController().select(user_api="blas")
        except Exception:  # pragma: no cover - threadpoolctl missing: leave BLAS as it is
            _BLAS_CTL = False
    if _BLAS_CTL is False or not _BLAS_CTL.lib_controllers:
        import contextlib

        return contextlib.nullcontext()
    return _BLAS_CTL.limit(limits=1)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; all logical CPUs off Linux)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The thread count the kernels use: OMP_NUM_THREADS, else the CPUs this process may use."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
        if n >= 1:
            return n
    except ValueError:
        pass
    return usable_cpus()


@contextlib.contextmanager
def kernel_threads(n: int | None) -> Iterator[None]:
    """Within the block, the compiled kernels called from this thread use `n` threads (capped, as
    always, for problems too small to split); None leaves their default (OMP_NUM_THREADS,
    `workbench_ext.cpu.set_num_threads`). The count is the calling thread's OpenMP setting, the
    one every kernel reads when it is given none: set for the block, then put back."""
    from workbench.runtime import kernels

    cpu = kernels._ext_cpu
    if n is None or cpu is None:
        yield
        return
    before = cpu.get_num_threads()
    if before != n:
        cpu.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            cpu.set_num_threads(before)


_POOL: Any = None


def parallel_run(tasks: list[Callable[[], None]]) -> None:
    """Run independent NumPy tasks on Python threads (NumPy releases the GIL in matmul and the
    kernels release it too); used to spread the attention heads over cores with 1-thread BLAS."""
    global _POOL
    if len(tasks) <= 1:
        for t in tasks:
            t()
        return
    if _POOL is None or _POOL._max_workers < len(tasks):
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="wb-attn")
    futures = [_POOL.submit(t) for t in tasks[1:]]
    tasks[0]()  # the calling thread does one share
    for f in futures:
        f.result()
