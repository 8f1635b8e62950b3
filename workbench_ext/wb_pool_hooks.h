/* The pool's introspection and test hooks, for workbench_ext.pool only: counters, settings, the
 * job trace, and the test jobs tests/test_pool.py runs (the pool itself is wb_pool_impl.h). */
#ifndef WB_POOL_HOOKS_H
#define WB_POOL_HOOKS_H

#include "wb_pool_impl.h"

static long wb_pool_stat(int which) {
    return which == 0 ? atomic_load(&wb_pool.jobs)
         : which == 1 ? atomic_load(&wb_pool.chunks_by_caller)
         : which == 2 ? atomic_load(&wb_pool.chunks_by_workers)
         : which == 3 ? atomic_load(&wb_pool.chunks_taken)
         : which == 4 ? atomic_load(&wb_pool.moves) : atomic_load(&wb_pool.wakes);
}
static int wb_pool_workers(void) { return wb_pool.nworkers; }
/* tests: the cache line (byte offset / 64 in wb_pool_t) of field `which`: 0 state, 1 done, 2 fn,
 * 3 grain (the last of the job's fields), 4 running, 5 the workers' settings (sleepers), 6 the
 * caller's counters (jobs), 7 the workers' counters (chunks_by_workers), 8 the first range */
static long wb_pool_test_line_of(int which) {
    const size_t off = which == 0 ? offsetof(wb_pool_t, state) : which == 1 ? offsetof(wb_pool_t, done)
                     : which == 2 ? offsetof(wb_pool_t, fn) : which == 3 ? offsetof(wb_pool_t, grain)
                     : which == 4 ? offsetof(wb_pool_t, running) : which == 5 ? offsetof(wb_pool_t, sleepers)
                     : which == 6 ? offsetof(wb_pool_t, jobs) : which == 7 ? offsetof(wb_pool_t, chunks_by_workers)
                     : offsetof(wb_pool_t, range);
    return (long)(off / 64) + (((uintptr_t)&wb_pool % 64) ? 1000000 : 0);   /* + 10^6: misaligned */
}
static void wb_pool_set_spin_ns(long ns) { atomic_store(&wb_pool.spin_ns, ns); }
static long wb_pool_get_spin_ns(void) { return atomic_load(&wb_pool.spin_ns); }
static void wb_pool_hold(int held) { atomic_store(&wb_pool.held, held); }
static void wb_pool_set_shared(int shared) { atomic_store(&wb_pool.shared, shared); }
static void wb_pool_set_apart(int apart) { atomic_store(&wb_pool.apart, apart); }
static int wb_pool_get_apart(void) { return atomic_load(&wb_pool.apart); }
static void wb_pool_set_sleep_apart(int on) { atomic_store(&wb_pool.sleep_apart, on); }
static void wb_pool_set_done_each(int on) { atomic_store(&wb_pool.done_each, on); }
/* start a trace into rec[0 .. cap) (cap 0: stop); returns how many jobs the last one recorded */
static long wb_pool_trace_set(wb_pool_job_rec_t *rec, long cap) {
    const long len = wb_pool_trace.len;
    wb_pool_trace.on = 0;
    wb_pool_trace.rec = rec;
    wb_pool_trace.cap = cap;
    wb_pool_trace.len = 0;
    wb_pool_trace.on = cap > 0;
    return len;
}

/* Tests: this thread plays worker 1 of a 2-thread job whose caller is on this thread's CPU.
 * Writes the CPU before and after wb_pool_move_apart to cpus[0], cpus[1]; returns 1 when it
 * moved. */
static int wb_pool_test_move_apart(int *cpus) {
    const int me = sched_getcpu();
    atomic_store(&wb_pool.range[0].cpu, me);
    const int moved = wb_pool_move_apart(1, me, 2);
    cpus[0] = me;
    cpus[1] = sched_getcpu();
    return moved;
}

/* Tests: the CPU thread k (0 the caller, i + 1 worker i) last started a job on (-1: none yet) */
static int wb_pool_test_range_cpu(int k) {
    return k >= 0 && k <= WB_POOL_MAX_WORKERS ? atomic_load(&wb_pool.range[k].cpu) : -1;
}

/* ~20 us of waiting in a test chunk, so that awake workers get chunks */
static void wb_pool_test_wait(void) {
    const long t0 = wb_pool_now_ns();
    while (wb_pool_now_ns() - t0 < 20000) _mm_pause();
}

/* out[i] = i for every i of the chunk, then the wait */
static void wb_pool_test_chunk(void *ctx, long b, long e) {
    long *out = (long *)ctx;
    for (long i = b; i < e; i++) out[i] = i;
    wb_pool_test_wait();
}
static void wb_pool_test_sum(int nt, long n, long grain, long *out) {
    wb_pool_run = wb_pool_run_impl;
    wb_parallel_for(nt, n, grain, wb_pool_test_chunk, out);
}

/* out[i] = the range of the thread that ran index i (0 the caller, i + 1 worker i), after
 * ~20 us of waiting per chunk */
static void wb_pool_test_who_chunk(void *ctx, long b, long e) {
    long *out = (long *)ctx;
    wb_pool_test_wait();
    for (long i = b; i < e; i++) out[i] = wb_pool_self;
}
static void wb_pool_test_who(int nt, long n, long grain, long *out) {
    wb_pool_run = wb_pool_run_impl;
    wb_parallel_for(nt, n, grain, wb_pool_test_who_chunk, out);
}

/* The index of the first chunk a worker runs in a job of n chunks whose chunk 0 (the caller's
 * first) waits until some worker has started a chunk, or -1 if none has within 2 s. With owned
 * ranges a worker starts at the front of its own range (n / nt for worker 0); with one shared
 * range it takes the next free chunk (0 or 1). */
static _Atomic long wb_pool_test_first = -1;
static void wb_pool_test_first_chunk(void *ctx, long b, long e) {
    (void)ctx;
    for (long i = b; i < e; i++) {
        if (wb_pool_self) {
            long none = -1;
            atomic_compare_exchange_strong(&wb_pool_test_first, &none, i);
        } else if (i == 0) {
            const long t0 = wb_pool_now_ns();
            while (atomic_load(&wb_pool_test_first) < 0 && wb_pool_now_ns() - t0 < 2000000000L) sched_yield();
        }
    }
}
static long wb_pool_test_worker_first(int nt, long n) {
    wb_pool_run = wb_pool_run_impl;
    atomic_store(&wb_pool_test_first, -1);
    wb_parallel_for(nt, n, 1, wb_pool_test_first_chunk, NULL);
    return atomic_load(&wb_pool_test_first);
}

/* Back-to-back jobs of alternating size with chunks that take no time, so a worker finishing
 * the last chunk of one job meets the caller publishing the next (the window in which a chunk
 * of a new job could once be claimed under the old generation). Each index counts its runs;
 * returns how many jobs ran some index other than exactly once. */
static void wb_pool_stress_chunk(void *ctx, long b, long e) {
    _Atomic int *count = (_Atomic int *)ctx;
    for (long i = b; i < e; i++) atomic_fetch_add(&count[i], 1);
}
static long wb_pool_test_stress(int nt, long jobs, int *count_ /* >= 64 */) {
    _Atomic int *count = (_Atomic int *)count_;
    wb_pool_run = wb_pool_run_impl;
    long bad = 0;
    for (long j = 0; j < jobs; j++) {
        const long n = (j & 1) ? 64 : 1 + (j % 3);
        for (long i = 0; i < 64; i++) atomic_store(&count[i], 0);
        wb_parallel_for(nt, n, 1, wb_pool_stress_chunk, (void *)count);
        int ok = 1;
        for (long i = 0; i < 64; i++) ok &= atomic_load(&count[i]) == (i < n);
        bad += !ok;
    }
    return bad;
}

#endif
