/* The workbench thread pool behind wb_parallel_for (wb_pool.h); compiled into workbench_ext.pool
 * only, which hands wb_pool_run_impl to the other modules in a capsule.
 *
 * One job at a time. A job is (fn, ctx, n, grain), cut into `chunks` chunks of `grain`; the
 * caller and its workers each own a contiguous range of them: with nt threads, thread k (the
 * caller is 0, worker i is i + 1) owns [k * chunks / nt, (k + 1) * chunks / nt). A thread runs
 * its own range from the front, then takes chunks of the other ranges from their backs.
 *
 * Why owned ranges (2026-12-05): every op of a forward cuts its rows the same way (rows, then
 * columns, in the order of the chunk index), so with a range per thread the rows one thread
 * quantized are the rows it packs, multiplies and normalises next; only attention moves rows
 * between threads. With one shared counter, chunks went to whichever thread asked first, and
 * about half of every op's input was written by the other core. On a 2-vCPU Zen 4 whose host
 * moves the vCPUs between dies, that cost the 90 %-sparse forward 1.77x in the far placement
 * (results/bench/zen4-spread). Taking from the back keeps the pool's tolerance of a late thread:
 * the caller takes over a worker's range when the worker does not come, and waits only for chunks
 * some thread has started.
 *
 * Each range is one 64-bit word, (job generation << 32) | (next << 16) | end, claimed by
 * compare-and-swap: the owner moves `next` up, a thief moves `end` down. The generation in the
 * word means a thread still holding an old job can never claim a chunk of a new one: its
 * compare-and-swap expects the old generation. (A separate chunk counter once let a worker claim
 * a chunk of a new job under the old generation; the stress test in tests/test_pool.py caught
 * it.) The caller publishes a job as: its fields, then every range word, then `state` = (new
 * generation, thread count, range count); workers start on the change of `state`, so they see
 * all of it.
 * Threads apart (2026-12-05): a worker that finds, at the start of a job, that it runs on the
 * same CPU as another thread of the job (each records sched_getcpu() in its range's slot) moves
 * itself to one of the process's other CPUs: it narrows its affinity to the allowed CPUs no
 * other thread of the job is on, which migrates it at once, then restores the mask (so it is
 * never pinned). Why: in `workbench bench`, where engine processes take turns with pauses, the
 * guest sometimes woke our two threads onto one vCPU and left them there for a scheduler tick or
 * two; the worker then ran a fraction of the chunks and the caller waited for it. In three
 * pairs of benches, 0 / 5 / 7 of 15 timed 90 %-sparse forwards took over 1.4x their median, and
 * 0 / 1 / 1 with the threads kept apart; beside a busy process a forward got 1.10-1.17x faster
 * (results/bench/zen4-spread/apart_ab.txt). `apart` (WORKBENCH_POOL_APART=0) turns it off.
 * Jobs of more than WB_POOL_MAX_CHUNKS chunks get a larger grain. Workers spin for
 * wb_pool_spin_ns after their last chunk (a forward's ops come tens of microseconds apart, and
 * waking a sleeping thread costs about that much), then sleep on a condition variable.
 *
 * A call made while a job is running (a second Python thread, or a chunk calling
 * wb_parallel_for) runs on its own calling thread. A forked child starts with no workers
 * (pthread_atfork) and creates them again when it first needs them.
 */
#ifndef WB_POOL_IMPL_H
#define WB_POOL_IMPL_H

/* sched_getcpu, cpu_set_t and pthread_[gs]etaffinity_np need _GNU_SOURCE before the first system
 * header: Python.h defines it, and the emulation tests define it first */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <immintrin.h>

#include "wb_pool.h"

#define WB_POOL_MAX_WORKERS 255
#define WB_POOL_MAX_CHUNKS 0xffffL     /* a range's bounds are 16-bit fields of its word */

/* one thread's range of the current job, and the CPU it last started a job on (-1: none yet),
 * alone on their cache line */
typedef struct { _Atomic uint64_t w; _Atomic int cpu; char pad[52]; } wb_pool_range_t;

/* Each field a spinning thread reads has a cache line to itself: the workers spin on `state`,
 * the caller on `done`. Were the caller's stores (the job's fields, the counters) in the line a
 * worker spins on, each would first have to take the line back from that worker: ~0.4 us apiece
 * with the two vCPUs on different dies (results/bench/zen5-b1-order/). */
typedef struct {
    _Alignas(64) _Atomic uint64_t state; /* (generation << 32) | (threads taking part (caller +
                                     * helpers) << 16) | ranges (threads, or 1 when `shared`) */
    _Alignas(64) _Atomic long done; /* chunks of the current job that have finished */
    _Alignas(64) _Atomic(wb_range_fn) fn;   /* the job: written before `state`, then only read */
    _Atomic(void *) ctx;
    _Atomic long n, grain;
    _Alignas(64) _Atomic int running; /* a job is in flight (later calls run serially) */
    _Alignas(64) _Atomic int sleepers;  /* this line: settings the workers read every job */
    _Atomic int held;               /* tests: workers take no chunks while set */
    _Atomic int shared;             /* A/B: one range that every thread takes from the front
                                     * (the pool before owned ranges) */
    _Atomic int apart;              /* a worker on another job thread's CPU moves (default 1) */
    _Atomic int sleep_apart;        /* A/B (with `apart`): a worker sleeps away from the other
                                     * threads' CPUs (default 1) */
    _Atomic int done_each;          /* A/B: each chunk is added to `done` as it ends (the pool
                                     * before 2026-12-06; default 0: once per thread, wb_pool_work) */
    _Atomic long spin_ns;
    _Alignas(64) _Atomic long jobs, chunks_by_caller, wakes;     /* counters the caller adds to */
    int nworkers;                   /* created so far; changed by the caller only */
    _Alignas(64) _Atomic long chunks_by_workers, chunks_taken, moves;   /* the threads that ran or
                                     * took chunks add to these */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int atfork_registered;
    _Alignas(64) wb_pool_range_t range[WB_POOL_MAX_WORKERS + 1];
} wb_pool_t;

static wb_pool_t wb_pool = {.spin_ns = 200000, .apart = 1, .sleep_apart = 1};

/* The job trace (workbench_ext.pool.trace): while `on`, every parallel job records when it
 * started and ended (ns, CLOCK_MONOTONIC), its chunk count, and how many chunks the workers ran,
 * into the first `cap` slots. Read by the caller only after its jobs: no locking. */
typedef struct { long start_ns, end_ns, chunks, by_workers; } wb_pool_job_rec_t;
static struct { int on; long cap, len; wb_pool_job_rec_t *rec; } wb_pool_trace;
static __thread int wb_pool_self = 0;   /* this thread's range: 0 the caller, i + 1 worker i */

static inline long wb_pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static inline uint64_t wb_pool_range_word(uint32_t gen, long next, long end) {
    return ((uint64_t)gen << 32) | ((uint64_t)next << 16) | (uint64_t)end;
}

/* Claim one chunk of range `r` under generation `gen`, from its front (`front`) or its back, and
 * run it. Returns 1 when a chunk ran, 0 when the range is empty, -1 when the job has changed. */
static int wb_pool_take(uint32_t gen, int r, int front) {
    _Atomic uint64_t *slot = &wb_pool.range[r].w;
    for (;;) {
        uint64_t w = atomic_load(slot);
        if ((uint32_t)(w >> 32) != gen) return -1;
        const long next = (long)((w >> 16) & 0xffff), end = (long)(w & 0xffff);
        if (next >= end) return 0;
        /* read before the claim: if the job changed meanwhile, the word changed too (it holds
         * the generation), so the claim below fails and a chunk only runs with its own job's
         * fields */
        const wb_range_fn fn = atomic_load(&wb_pool.fn);
        void *const ctx = atomic_load(&wb_pool.ctx);
        const long n = atomic_load(&wb_pool.n), grain = atomic_load(&wb_pool.grain);
        const long i = front ? next : end - 1;
        const uint64_t claimed = front ? wb_pool_range_word(gen, next + 1, end) : wb_pool_range_word(gen, next, end - 1);
        if (!atomic_compare_exchange_weak(slot, &w, claimed)) continue;
        const long b = i * grain, e = b + grain < n ? b + grain : n;
        fn(ctx, b, e);
        return 1;
    }
}

/* Run chunks of generation `gen`, published in `ranges` ranges, until none is left: this
 * thread's own range (`self`) from the front, then the others' from the back; with one range
 * (the `shared` A/B mode) every thread takes from its front. Returns how many this thread ran.
 * The chunks it ran are added to `done` once, when it has finished them all: the caller waits
 * for `done` to reach the job's chunk count, so no chunk can be outstanding then. One addition per
 * chunk (until 2026-12-06; `done_each`, the A/B switch) moved `done`'s cache line, which also
 * holds the job's fields that every claim reads, between the cores at every chunk: perf put 10 %
 * of a 90 %-sparse 128 x 768 x 3072 layer's samples on 2 threads in this function, two thirds
 * after that locked add; timed, the change is 0-3 % on such layers and within noise on whole
 * forwards (Zen 5, results/bench/zen5-pool-done/). */
static long wb_pool_work(uint32_t gen, int self, int ranges) {
    const int each = atomic_load_explicit(&wb_pool.done_each, memory_order_relaxed);
    long ran = 0, taken = 0;
    int rc;
    if (ranges == 1) self = 0;
    while ((rc = wb_pool_take(gen, self, 1)) > 0) {
        ran++;
        if (each) atomic_fetch_add(&wb_pool.done, 1);
    }
    for (int s = 1; rc >= 0 && s < ranges; s++) {
        const int r = (self + s) % ranges;
        while ((rc = wb_pool_take(gen, r, 0)) > 0) {
            taken++;
            if (each) atomic_fetch_add(&wb_pool.done, 1);
        }
    }
    if (!each && ran + taken) atomic_fetch_add(&wb_pool.done, ran + taken);
    if (taken) atomic_fetch_add(&wb_pool.chunks_taken, taken);
    return ran + taken;
}

/* Narrow this thread's affinity to the allowed CPUs that none of threads [0, threads) other
 * than `self` last started a job on (which migrates it there at once). `allowed` gets the mask
 * to restore. Returns 1 when narrowed, 0 when there is nowhere else to go. */
static int wb_pool_narrow_away(int self, int threads, cpu_set_t *allowed) {
    if (pthread_getaffinity_np(pthread_self(), sizeof *allowed, allowed) != 0) return 0;
    cpu_set_t away = *allowed;
    for (int k = 0; k < threads; k++) {
        const int c = atomic_load(&wb_pool.range[k].cpu);
        if (k != self && c >= 0 && c < CPU_SETSIZE) CPU_CLR(c, &away);
    }
    if (CPU_COUNT(&away) == 0 || CPU_EQUAL(&away, allowed)) return 0;   /* more threads than CPUs */
    return pthread_setaffinity_np(pthread_self(), sizeof away, &away) == 0;
}

/* Worker `self` of a job of `threads` threads, on CPU `me`: if another thread of the job last
 * started a job on `me`, move to an allowed CPU none of them is on (see the top of this file).
 * Returns 1 when it moved. */
static int wb_pool_move_apart(int self, int me, int threads) {
    int clash = 0;
    for (int k = 0; k < threads; k++)
        clash |= k != self && atomic_load(&wb_pool.range[k].cpu) == me;
    if (!clash) return 0;
    cpu_set_t allowed;
    if (!wb_pool_narrow_away(self, threads, &allowed)) return 0;
    pthread_setaffinity_np(pthread_self(), sizeof allowed, &allowed);   /* moved; not pinned */
    atomic_store(&wb_pool.range[self].cpu, sched_getcpu());
    atomic_fetch_add(&wb_pool.moves, 1);
    return 1;
}

/* Worker `self` is about to sleep after a job of `threads` threads: with `apart` on, it sleeps
 * on a CPU the other threads were not on, its affinity narrowed until it wakes (`allowed` gets
 * the mask to restore; returns 1 when narrowed). Why: after a pause (a request a few per
 * second, the bench's turns) the other vCPU has halted, and the guest woke the worker onto the
 * caller's vCPU, where it waited for the scheduler's next tick (4 ms at HZ=250) while the caller
 * ran every chunk alone: a DistilBERT forward at 16 tokens took 4.4 ms in its first call after
 * 0.1 s against 2.5 ms warm (results/bench/zen4-wake/). Narrowed, the wake-up can only put it
 * on its own vCPU. */
static int wb_pool_sleep_away(int self, int threads, cpu_set_t *allowed) {
    if (!atomic_load(&wb_pool.apart) || !atomic_load(&wb_pool.sleep_apart)) return 0;
    return wb_pool_narrow_away(self, threads, allowed);
}

static void *wb_pool_worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    wb_pool_self = id + 1;
    uint32_t seen = (uint32_t)(atomic_load(&wb_pool.state) >> 32);
    for (;;) {
        /* spin, then sleep, until a new generation is published */
        const long t0 = wb_pool_now_ns();
        const long spin = atomic_load(&wb_pool.spin_ns);
        uint64_t st = 0;
        for (unsigned k = 1;; k++) {
            st = atomic_load(&wb_pool.state);
            if ((uint32_t)(st >> 32) != seen) break;
            _mm_pause();
            if ((k & 63) == 0 && wb_pool_now_ns() - t0 > spin) {
                cpu_set_t allowed;
                const int narrowed = wb_pool_sleep_away(id + 1, (int)((st >> 16) & 0xffff), &allowed);
                pthread_mutex_lock(&wb_pool.mu);
                atomic_fetch_add(&wb_pool.sleepers, 1);
                while ((uint32_t)((st = atomic_load(&wb_pool.state)) >> 32) == seen)
                    pthread_cond_wait(&wb_pool.cv, &wb_pool.mu);
                atomic_fetch_sub(&wb_pool.sleepers, 1);
                pthread_mutex_unlock(&wb_pool.mu);
                if (narrowed) pthread_setaffinity_np(pthread_self(), sizeof allowed, &allowed);
                break;
            }
        }
        seen = (uint32_t)(st >> 32);
        const int threads = (int)((st >> 16) & 0xffff), ranges = (int)(st & 0xffff);
        /* not asked to help; no ranges: a wake-up without a job (wb_pool_wake_impl) */
        if (id + 1 >= threads || ranges == 0 || atomic_load(&wb_pool.held)) continue;
        const int me = sched_getcpu();
        atomic_store(&wb_pool.range[id + 1].cpu, me);
        if (atomic_load(&wb_pool.apart) && me >= 0) wb_pool_move_apart(id + 1, me, threads);
        const long ran = wb_pool_work(seen, id + 1, ranges);
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
        atomic_store(&wb_pool.range[wb_pool.nworkers + 1].cpu, -1);
        pthread_attr_t attr;
        pthread_t t;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, wb_pool_worker, (void *)(intptr_t)wb_pool.nworkers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;          /* fewer threads: the caller does the rest */
        /* named here, not by the thread itself, so it has its name before any job is published
         * (top -H, /proc/<pid>/task/<tid>/comm) */
        char name[16];
        snprintf(name, sizeof name, "wb-pool-%d", wb_pool.nworkers + 1);
        pthread_setname_np(t, name);
        wb_pool.nworkers++;
    }
    return wb_pool.nworkers;
}

/* Wake the sleeping workers without a job: each then spins for spin_ns, as after a job, for the
 * next one. A caller with serial work before its first parallel job (a forward's input checks
 * and setup in Python, ~0.1 ms) calls this first, so that a worker's wake-up (~0.1 ms on these
 * VMs after a pause: results/bench/zen5-cache) overlaps that work instead of the first job.
 * The state keeps the last job's thread count (a worker that sleeps again still sleeps away from
 * those threads' CPUs) with no ranges, which workers read as "nothing to do". One atomic load
 * when no worker sleeps; nothing while a job runs. */
static void wb_pool_wake_impl(void) {
    if (atomic_load(&wb_pool.sleepers) == 0) return;
    int idle = 0;
    if (!atomic_compare_exchange_strong(&wb_pool.running, &idle, 1)) return;
    const uint64_t st = atomic_load(&wb_pool.state);
    const uint32_t gen = (uint32_t)(st >> 32) + 1;
    atomic_store(&wb_pool.state, ((uint64_t)gen << 32) | (st & 0xffff0000u));
    pthread_mutex_lock(&wb_pool.mu);
    pthread_cond_broadcast(&wb_pool.cv);
    pthread_mutex_unlock(&wb_pool.mu);
    atomic_fetch_add(&wb_pool.wakes, 1);
    atomic_store(&wb_pool.running, 0);
}

static void wb_pool_run_impl(int nt, long n, long grain, wb_range_fn fn, void *ctx) {
    /* before publishing: a woken worker can take the caller's core and run the whole job first */
    const long t_start = wb_pool_trace.on ? wb_pool_now_ns() : 0;
    int idle = 0;
    if (!atomic_compare_exchange_strong(&wb_pool.running, &idle, 1)) {
        fn(ctx, 0, n);               /* a job is in flight: this call runs on its own thread */
        return;
    }
    if ((n + grain - 1) / grain > WB_POOL_MAX_CHUNKS) grain = (n + WB_POOL_MAX_CHUNKS - 1) / WB_POOL_MAX_CHUNKS;
    const long chunks = (n + grain - 1) / grain;
    int helpers = wb_pool_grow(nt - 1);
    if (helpers > nt - 1) helpers = nt - 1;
    if (helpers > chunks - 1) helpers = (int)chunks - 1;
    const int threads = helpers + 1;
    const uint32_t gen = (uint32_t)(atomic_load(&wb_pool.state) >> 32) + 1;
    /* the fields, then the ranges (each carries the new generation), then `state`, on whose
     * change the workers start: see the top of this file */
    atomic_store(&wb_pool.fn, fn);
    atomic_store(&wb_pool.ctx, ctx);
    atomic_store(&wb_pool.n, n);
    atomic_store(&wb_pool.grain, grain);
    atomic_store(&wb_pool.done, 0);
    atomic_store(&wb_pool.range[0].cpu, sched_getcpu());
    const int ranges = atomic_load(&wb_pool.shared) ? 1 : threads;
    for (int k = 0; k < ranges; k++)
        atomic_store(&wb_pool.range[k].w, wb_pool_range_word(gen, k * chunks / ranges, (k + 1) * chunks / ranges));
    atomic_store(&wb_pool.state, ((uint64_t)gen << 32) | ((uint64_t)threads << 16) | (uint64_t)ranges);
    if (atomic_load(&wb_pool.sleepers) > 0) {
        pthread_mutex_lock(&wb_pool.mu);
        pthread_cond_broadcast(&wb_pool.cv);
        pthread_mutex_unlock(&wb_pool.mu);
    }
    long mine = wb_pool_work(gen, 0, ranges);
    /* only chunks a worker has started are left: wait for them, yielding now and then in case
     * that worker shares this thread's core */
    for (unsigned k = 1; atomic_load(&wb_pool.done) < chunks; k++) {
        _mm_pause();
        if ((k & 1023) == 0) sched_yield();
    }
    atomic_fetch_add(&wb_pool.jobs, 1);
    atomic_fetch_add(&wb_pool.chunks_by_caller, mine);
    if (wb_pool_trace.on && wb_pool_trace.len < wb_pool_trace.cap)
        wb_pool_trace.rec[wb_pool_trace.len++] = (wb_pool_job_rec_t){t_start, wb_pool_now_ns(), chunks, chunks - mine};
    atomic_store(&wb_pool.running, 0);
}

#endif
