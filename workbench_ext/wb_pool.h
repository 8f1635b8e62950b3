/* The kernels' parallel loop: wb_parallel_for(nt, n, grain, fn, ctx) runs fn(ctx, begin, end)
 * over [0, n) in chunks of `grain` on up to nt threads of the one workbench thread pool
 * (wb_pool_impl.h, built into workbench_ext.pool).
 *
 * Why not an OpenMP `parallel for`: a fork-join region ends when *every* thread of the team has
 * checked in, so when another process holds the core of one thread, each of a forward's ~60
 * regions waits for that thread to be scheduled again (measured on a 2-core Zen 4 with one busy
 * process beside the 2 threads: 0.68x ONNX Runtime int8 instead of 1.4x). In the pool the
 * calling thread takes every chunk no thread has started, and waits only for chunks that are
 * running, as ONNX Runtime's own pool does; a late worker finds nothing left and goes back to
 * waiting.
 *
 * Every kernel module includes this header (through wb_common.h) and binds, at import, the one
 * pool of workbench_ext.pool (wb_pool_bind): the modules share its threads, as they shared
 * libgomp's. Unbound (the scalar emulation test compiles the headers without Python), loops run
 * on the calling thread.
 */
#ifndef WB_POOL_H
#define WB_POOL_H

typedef void (*wb_range_fn)(void *ctx, long begin, long end);
typedef void (*wb_pool_run_fn)(int nt, long n, long grain, wb_range_fn fn, void *ctx);

#define WB_POOL_CAPSULE "workbench_ext.pool._run"

/* this module's pointer to the pool's entry point (NULL: run on the calling thread) */
static wb_pool_run_fn wb_pool_run = 0;

/* fn(ctx, b, e) over [0, n) in chunks of `grain` (>= 1) on at most nt threads, the caller
 * among them; returns when all of [0, n) has run. Chunks may run in any order and on any of
 * the threads, so fn must not depend on which thread runs a chunk. */
static inline void wb_parallel_for(int nt, long n, long grain, wb_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (nt <= 1 || n <= grain || !wb_pool_run) {
        fn(ctx, 0, n);
        return;
    }
    wb_pool_run(nt, n, grain, fn, ctx);
}

/* A grain giving each of nt threads about `per_thread` chunks of [0, n): several per thread, so
 * the caller can take over a late worker's share in small pieces, each still long enough to keep
 * its cache lines (consecutive items share weight panels in the GEMMs). */
static inline long wb_grain(long n, int nt, int per_thread) {
    long chunks = (long)(nt < 1 ? 1 : nt) * (per_thread < 1 ? 1 : per_thread);
    long g = (n + chunks - 1) / chunks;
    return g < 1 ? 1 : g;
}

#ifdef Py_PYTHON_H
/* Called once at import by every kernel module: 0, or -1 with a Python error set. */
static int wb_pool_bind(PyObject *capsule) {
    void *p = PyCapsule_GetPointer(capsule, WB_POOL_CAPSULE);
    if (!p) return -1;
    wb_pool_run = (wb_pool_run_fn)p;
    return 0;
}
#endif

#endif
