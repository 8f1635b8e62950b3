/* The workbench thread pool behind wb_parallel_for (wb_pool.h); compiled into workbench_ext.pool
 * only, which hands wb_pool_run_impl to the other modules in a capsule.
 *
 * One job at a time. A job is (fn, ctx, n, grain); its chunks are claimed from one 64-bit word,
 * `next` = (job generation << 32) | next chunk, by compare-and-swap, so a thread still holding an
 * old generation can never claim a chunk of the new job. The caller publishes a job in two
 * stores: first `next` = (new generation, WB_POOL_NOT_READY), which makes every claim under the
 * old generation fail, then the job's fields, then `next` = (new generation, 0). (With one
 * store after the fields, a worker that had read `next` = (old generation, last chunk + 1) and
 * then the *new* job's chunk count could claim a chunk of the new job under the old
 * generation: that chunk ran twice, and its `done` count could let the caller return while a
 * chunk still ran on its stack's job; the stress test in tests/test_pool.py caught it.) The
 * caller then claims chunks itself like any worker and waits until `done` counts every chunk:
 * only chunks some thread has *started* can make it wait. Workers spin for wb_pool_spin_ns
 * after their last chunk (a forward's ops come tens of microseconds apart, and waking a
 * sleeping thread costs about that much), then sleep on a condition variable.
 *
 * A call made while a job is running (a second Python thread, or a chunk calling
 * wb_parallel_for) runs on its own calling thread. A forked child starts with no workers
 * (pthread_atfork) and creates them again when it first needs them.
 */
#ifndef WB_POOL_IMPL_H
#define WB_POOL_IMPL_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <immintrin.h>

#include "wb_pool.h"

#define WB_POOL_MAX_WORKERS 255
#define WB_POOL_NOT_READY 0xffffffffu   /* chunk index of a job whose fields are being written */

typedef struct {
    _Atomic uint64_t next;          /* (generation << 32) | next chunk index */
    _Atomic long done;              /* chunks of the current job that have finished */
    _Atomic(wb_range_fn) fn;
    _Atomic(void *) ctx;
    _Atomic long n, grain, chunks;
    _Atomic int helpers;            /* workers 0 .. helpers-1 may join the current job */
    _Atomic int running;            /* a job is in flight (later calls run serially) */
    _Atomic int sleepers;
    _Atomic int held;               /* tests: workers take no chunks while set */
    _Atomic long spin_ns;
    _Atomic long jobs, chunks_by_caller, chunks_by_workers;
    int nworkers;                   /* created so far; changed by the caller only */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int atfork_registered;
} wb_pool_t;

static wb_pool_t wb_pool = {.spin_ns = 200000};

static inline long wb_pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Claim and run chunks of generation `gen` until none is left; returns how many this thread ran.
 * `worker`: the worker's id, or -1 for the caller. */
static long wb_pool_work(uint32_t gen, int worker) {
    long ran = 0;
    int checked = worker < 0;
    for (unsigned k = 1;; k++) {
        uint64_t c = atomic_load(&wb_pool.next);
        if ((uint32_t)(c >> 32) != gen) return ran;
        if ((uint32_t)c == WB_POOL_NOT_READY) {   /* the caller is still writing the job */
            _mm_pause();
            if ((k & 1023) == 0) sched_yield();   /* ... from this thread's core, perhaps */
            continue;
        }
        if (!checked) {           /* the job's fields are written: may this worker join it? */
            if (worker >= atomic_load(&wb_pool.helpers) || atomic_load(&wb_pool.held)) return ran;
            checked = 1;
        }
        const long i = (long)(c & 0xffffffffu);
        /* read before the claim: if the job changed meanwhile, `next` left (gen, i) before any
         * field was written, so the claim below fails and a chunk only ever runs with its own
         * job's fields */
        const wb_range_fn fn = atomic_load(&wb_pool.fn);
        void *const ctx = atomic_load(&wb_pool.ctx);
        const long n = atomic_load(&wb_pool.n), grain = atomic_load(&wb_pool.grain);
        if (i >= atomic_load(&wb_pool.chunks)) return ran;
        if (!atomic_compare_exchange_weak(&wb_pool.next, &c, c + 1)) continue;
        const long b = i * grain, e = b + grain < n ? b + grain : n;
        fn(ctx, b, e);
        ran++;
        atomic_fetch_add(&wb_pool.done, 1);
    }
}

static void *wb_pool_worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    uint32_t seen = (uint32_t)(atomic_load(&wb_pool.next) >> 32);
    for (;;) {
        /* spin, then sleep, until a new generation is published */
        const long t0 = wb_pool_now_ns();
        const long spin = atomic_load(&wb_pool.spin_ns);
        uint32_t gen = seen;
        for (unsigned k = 1;; k++) {
            gen = (uint32_t)(atomic_load(&wb_pool.next) >> 32);
            if (gen != seen) break;
            _mm_pause();
            if ((k & 63) == 0 && wb_pool_now_ns() - t0 > spin) {
                pthread_mutex_lock(&wb_pool.mu);
                atomic_fetch_add(&wb_pool.sleepers, 1);
                while ((gen = (uint32_t)(atomic_load(&wb_pool.next) >> 32)) == seen)
                    pthread_cond_wait(&wb_pool.cv, &wb_pool.mu);
                atomic_fetch_sub(&wb_pool.sleepers, 1);
                pthread_mutex_unlock(&wb_pool.mu);
                break;
            }
        }
        seen = gen;
        const long ran = wb_pool_work(gen, id);
        if (ran) atomic_fetch_add(&wb_pool.chunks_by_workers, ran);
    }
    return NULL;
}

static void wb_pool_after_fork_child(void) {
    /* the child has only the forking thread: no workers, no job in flight */
    wb_pool.nworkers = 0;
    atomic_store(&wb_pool.running, 0);
    atomic_store(&wb_pool.sleepers, 0);
    pthread_mutex_init(&wb_pool.mu, NULL);
    pthread_cond_init(&wb_pool.cv, NULL);
}

/* Start workers until there are `want`; returns how many there are. */
static int wb_pool_grow(int want) {
    if (want > WB_POOL_MAX_WORKERS) want = WB_POOL_MAX_WORKERS;
    if (!wb_pool.atfork_registered) {
        pthread_mutex_init(&wb_pool.mu, NULL);
        pthread_cond_init(&wb_pool.cv, NULL);
        pthread_atfork(NULL, NULL, wb_pool_after_fork_child);
        wb_pool.atfork_registered = 1;
    }
    while (wb_pool.nworkers < want) {
        pthread_attr_t attr;
        pthread_t t;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, wb_pool_worker, (void *)(intptr_t)wb_pool.nworkers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;          /* fewer threads: the caller does the rest */
        wb_pool.nworkers++;
    }
    return wb_pool.nworkers;
}

static void wb_pool_run_impl(int nt, long n, long grain, wb_range_fn fn, void *ctx) {
    int idle = 0;
    if (!atomic_compare_exchange_strong(&wb_pool.running, &idle, 1)) {
        fn(ctx, 0, n);               /* a job is in flight: this call runs on its own thread */
        return;
    }
    const long chunks = (n + grain - 1) / grain;
    if (chunks >= (long)WB_POOL_NOT_READY) {   /* more chunks than `next` can count */
        atomic_store(&wb_pool.running, 0);
        fn(ctx, 0, n);
        return;
    }
    int helpers = wb_pool_grow(nt - 1);
    if (helpers > nt - 1) helpers = nt - 1;
    const uint32_t gen = (uint32_t)(atomic_load(&wb_pool.next) >> 32) + 1;
    /* first close the old generation to claims (see the top of this file), then the fields */
    atomic_store(&wb_pool.next, ((uint64_t)gen << 32) | WB_POOL_NOT_READY);
    atomic_store(&wb_pool.fn, fn);
    atomic_store(&wb_pool.ctx, ctx);
    atomic_store(&wb_pool.n, n);
    atomic_store(&wb_pool.grain, grain);
    atomic_store(&wb_pool.chunks, chunks);
    atomic_store(&wb_pool.helpers, helpers);
    atomic_store(&wb_pool.done, 0);
    atomic_store(&wb_pool.next, (uint64_t)gen << 32);
    if (atomic_load(&wb_pool.sleepers) > 0) {
        pthread_mutex_lock(&wb_pool.mu);
        pthread_cond_broadcast(&wb_pool.cv);
        pthread_mutex_unlock(&wb_pool.mu);
    }
    long mine = wb_pool_work(gen, -1);
    /* only chunks a worker has started are left: wait for them, yielding now and then in case
     * that worker shares this thread's core */
    for (unsigned k = 1; atomic_load(&wb_pool.done) < chunks; k++) {
        _mm_pause();
        if ((k & 1023) == 0) sched_yield();
    }
    atomic_fetch_add(&wb_pool.jobs, 1);
    atomic_fetch_add(&wb_pool.chunks_by_caller, mine);
    atomic_store(&wb_pool.running, 0);
}

/* ---- introspection and test hooks (workbench_ext.pool) ---- */
static long wb_pool_stat(int which) {
    return which == 0 ? atomic_load(&wb_pool.jobs)
         : which == 1 ? atomic_load(&wb_pool.chunks_by_caller) : atomic_load(&wb_pool.chunks_by_workers);
}
static int wb_pool_workers(void) { return wb_pool.nworkers; }
static void wb_pool_set_spin_ns(long ns) { atomic_store(&wb_pool.spin_ns, ns); }
static long wb_pool_get_spin_ns(void) { return atomic_load(&wb_pool.spin_ns); }
static void wb_pool_hold(int held) { atomic_store(&wb_pool.held, held); }

/* out[i] = i for every i of the chunk, then ~20 us of waiting, so that awake workers get chunks */
static void wb_pool_test_chunk(void *ctx, long b, long e) {
    long *out = (long *)ctx;
    for (long i = b; i < e; i++) out[i] = i;
    const long t0 = wb_pool_now_ns();
    while (wb_pool_now_ns() - t0 < 20000) _mm_pause();
}
static void wb_pool_test_sum(int nt, long n, long grain, long *out) {
    wb_pool_run = wb_pool_run_impl;
    wb_parallel_for(nt, n, grain, wb_pool_test_chunk, out);
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
