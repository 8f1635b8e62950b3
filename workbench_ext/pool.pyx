"""The one thread pool every kernel module runs its parallel loops on (wb_pool.h says why it is
not OpenMP's fork-join).

The pool starts its threads when a kernel first asks for more than one, keeps them while the
process lives, and is shared by every ``workbench_ext`` module (each binds ``_run`` at import).
Between jobs a worker spins for ``spin_us`` microseconds, then sleeps: ``WORKBENCH_POOL_SPIN_US``
sets it for a process (default 200), :func:`set_spin_us` at run time. A worker that starts a job
on the CPU another thread of the job is on moves itself to another of the process's CPUs
(never pinned; wb_pool_impl.h says why): ``WORKBENCH_POOL_APART=0`` turns that off for a process,
:func:`set_apart` at run time.
"""
import os

from cpython.pycapsule cimport PyCapsule_New

cdef extern from "wb_pool_hooks.h" nogil:
    ctypedef void (*wb_range_fn)(void *ctx, long begin, long end)
    const char *WB_POOL_CAPSULE
    void wb_pool_run_impl(int nt, long n, long grain, wb_range_fn fn, void *ctx)
    void wb_parallel_for(int nt, long n, long grain, wb_range_fn fn, void *ctx)
    long wb_pool_stat(int which)
    int wb_pool_workers()
    void wb_pool_set_spin_ns(long ns)
    long wb_pool_get_spin_ns()
    void wb_pool_hold(int held)
    void wb_pool_set_shared(int shared)
    void wb_pool_set_apart(int apart)
    int wb_pool_get_apart()
    void wb_pool_set_sleep_apart(int on)
    void wb_pool_set_done_each(int on)
    void wb_pool_wake_impl()
    ctypedef struct wb_pool_job_rec_t:
        long start_ns, end_ns, chunks, by_workers
    long wb_pool_trace_set(wb_pool_job_rec_t *rec, long cap)
    void wb_pool_test_sum(int nt, long n, long grain, long *out)
    void wb_pool_test_who(int nt, long n, long grain, long *out)
    long wb_pool_test_stress(int nt, long jobs, int *count)
    long wb_pool_test_worker_first(int nt, long n)
    int wb_pool_test_move_apart(int *cpus)
    int wb_pool_test_range_cpu(int k)
    long wb_pool_test_line_of(int which)

_run = PyCapsule_New(<void*>wb_pool_run_impl, WB_POOL_CAPSULE, NULL)

DEFAULT_SPIN_US = 200


def spin_from_env() -> int:
    """WORKBENCH_POOL_SPIN_US (microseconds), or DEFAULT_SPIN_US when unset."""
    raw = os.environ.get("WORKBENCH_POOL_SPIN_US", "").strip()
    if not raw:
        return DEFAULT_SPIN_US
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"WORKBENCH_POOL_SPIN_US must be a whole number of microseconds >= 0, got {raw!r}")
    return value


def set_spin_us(int us) -> None:
    """How long (microseconds) an idle worker spins before it sleeps; 0 sleeps at once."""
    if us < 0:
        raise ValueError(f"spin_us must be >= 0, got {us}")
    wb_pool_set_spin_ns(<long>us * 1000)


def spin_us() -> int:
    """The current spin, in microseconds."""
    return wb_pool_get_spin_ns() // 1000


def apart_from_env() -> bool:
    """WORKBENCH_POOL_APART: "1" (the default when unset) or "0"."""
    raw = os.environ.get("WORKBENCH_POOL_APART", "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"WORKBENCH_POOL_APART must be 0 or 1, got {raw!r}")
    return raw != "0"


def set_apart(bint on) -> None:
    """Whether a worker that starts a job on another job thread's CPU moves to another CPU."""
    wb_pool_set_apart(on)


def apart() -> bool:
    """The current setting of :func:`set_apart`."""
    return bool(wb_pool_get_apart())


def stats() -> dict:
    """Jobs run in parallel so far, and who ran their chunks: ``{"workers", "jobs",
    "chunks_by_caller", "chunks_by_workers", "chunks_taken", "moves", "wakes"}`` (counts since
    the process started; ``chunks_taken``: chunks a thread took from another's range; ``moves``:
    times a worker moved off another job thread's CPU; ``wakes``: calls of :func:`wake` that
    found a worker asleep; see wb_pool_impl.h)."""
    return {"workers": wb_pool_workers(), "jobs": wb_pool_stat(0),
            "chunks_by_caller": wb_pool_stat(1), "chunks_by_workers": wb_pool_stat(2),
            "chunks_taken": wb_pool_stat(3), "moves": wb_pool_stat(4), "wakes": wb_pool_stat(5)}


def wake() -> None:
    """Wake the pool's sleeping workers now, without work: they spin (`spin_us`) waiting for the
    next parallel loop. Call it before serial work that precedes parallel kernels (the engine
    does, at the start of every forward), so a worker's wake-up overlaps that work. Cheap when
    no worker sleeps; does nothing while a loop runs."""
    wb_pool_wake_impl()


def _test_cache_lines() -> dict:
    """Tests: the cache line of each group of the pool's shared fields (wb_pool_t's byte offset
    // 64; 10**6 added when the pool itself does not start a line)."""
    names = ("state", "done", "job", "job_end", "running", "settings", "caller_counters",
             "worker_counters", "ranges")
    return {n: wb_pool_test_line_of(i) for i, n in enumerate(names)}


def _test_range_cpu(int k) -> int:
    """Tests: the CPU thread k of the last job (0 the caller, i + 1 worker i) started it on."""
    return wb_pool_test_range_cpu(k)


def _set_sleep_apart(bint on) -> None:
    """A/B switch (benchmarks): True (the default) lets a worker that goes to sleep narrow its
    affinity away from the other threads' CPUs until it wakes (with :func:`set_apart` on)."""
    wb_pool_set_sleep_apart(on)


def _set_done_per_chunk(bint on) -> None:
    """A/B switch (benchmarks, tests): True counts every chunk of a job as done the moment it
    ends, in the counter the caller waits on (the pool before 2026-12-06: that counter's cache
    line then moved between the cores at every chunk); False (the default) counts each thread's
    chunks once, when it has run them all. Results have the same bits either way."""
    wb_pool_set_done_each(on)


def _hold_workers(bint held) -> None:
    """Tests: while held, workers claim no chunks (a worker another process keeps off its core
    looks like this to the caller)."""
    wb_pool_hold(held)


def _set_owned_ranges(bint owned) -> None:
    """A/B switch (benchmarks, tests): True (the default) gives each thread its own range of a
    job's chunks; False hands every chunk to whichever thread asks first, from one shared range
    (the pool before owned ranges). Results have the same bits either way."""
    wb_pool_set_shared(not owned)


class trace:
    """Diagnostics: times every parallel job of the pool run inside ``with pool.trace() as t``
    (the caller's jobs; loops too small to go parallel run on the calling thread and are not
    seen). Afterwards ``t.jobs`` is a structured array with ``start_ns`` / ``end_ns``
    (CLOCK_MONOTONIC), ``chunks`` and ``by_workers`` (how many of them the workers ran), one row
    per job in order, at most ``capacity`` rows. Not for concurrent callers."""

    DTYPE = [("start_ns", "i8"), ("end_ns", "i8"), ("chunks", "i8"), ("by_workers", "i8")]

    def __init__(self, capacity: int = 100_000):
        import numpy as np
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._buf = np.zeros(capacity, dtype=self.DTYPE)
        self.jobs = self._buf[:0]

    def __enter__(self):
        cdef long[::1] view = self._buf.view("i8")
        wb_pool_trace_set(<wb_pool_job_rec_t *>&view[0], len(self._buf))
        return self

    def __exit__(self, *exc):
        cdef long n = wb_pool_trace_set(NULL, 0)
        self.jobs = self._buf[:n]
        return False


def _test_sum(int num_threads, long n, long grain):
    """Tests: run a parallel loop that writes i at out[i] for i in [0, n); returns the list."""
    import numpy as np
    out = np.full(n, -1, dtype=np.int64)
    cdef long[::1] view = out
    with nogil:
        wb_pool_test_sum(num_threads, n, grain, &view[0])
    return out


def _test_who(int num_threads, long n, long grain):
    """Tests: run a parallel loop of n indices whose chunks take ~20 us; returns, per index, the
    range of the thread that ran it (0 the caller, i + 1 worker i)."""
    import numpy as np
    out = np.full(n, -1, dtype=np.int64)
    cdef long[::1] view = out
    with nogil:
        wb_pool_test_who(num_threads, n, grain, &view[0])
    return out


def _test_worker_first(int num_threads, long n) -> int:
    """Tests: the index of the first chunk a worker ran in a job of n chunks whose chunk 0 waits
    (up to 2 s) until a worker has started one; -1 if none did."""
    cdef long first
    with nogil:
        first = wb_pool_test_worker_first(num_threads, n)
    return first


def _test_move_apart() -> tuple:
    """Tests: the calling thread acts as a worker that starts a job on its caller's CPU (the
    caller's CPU slot set to this thread's CPU); returns (moved, CPU before, CPU after)."""
    cdef int cpus[2]
    cdef int moved = wb_pool_test_move_apart(cpus)
    return bool(moved), cpus[0], cpus[1]


def _test_stress(int num_threads, long jobs) -> int:
    """Tests: `jobs` back-to-back parallel loops of alternating size (wb_pool_test_stress);
    returns how many ran some index other than exactly once."""
    import numpy as np
    count = np.zeros(64, dtype=np.int32)
    cdef int[::1] view = count
    cdef long bad
    with nogil:
        bad = wb_pool_test_stress(num_threads, jobs, &view[0])
    return bad


set_spin_us(spin_from_env())
set_apart(apart_from_env())
