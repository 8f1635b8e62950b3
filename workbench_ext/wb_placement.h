/* Where the host has put two of our CPUs, as seen from inside a VM: the round trip of one cache
 * line between them (two pinned threads taking turns on one atomic counter). On the 2-vCPU cloud
 * machines the host moves the vCPUs between dies for minutes at a time, and the round trip goes
 * from ~60-100 ns (one die) to ~330-420 ns (two): results/bench/zen4-spread/, zen5-spread/.
 * Used by `workbench_ext.cpu.line_round_trip_ns` (the bench records it before every round). */
#ifndef WB_PLACEMENT_H
#define WB_PLACEMENT_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

typedef struct {
    _Atomic long flag __attribute__((aligned(64)));  /* its own cache line: the one that travels */
    char pad[64 - sizeof(long)];
    long iters;
    int cpu;
} wb_pingpong_t;

static int wb_pin_self(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    return pthread_setaffinity_np(pthread_self(), sizeof s, &s) == 0;
}

static void *wb_pingpong_other(void *arg) {
    wb_pingpong_t *p = (wb_pingpong_t *)arg;
    const int pinned = wb_pin_self(p->cpu);
    atomic_store(&p->flag, pinned ? 0 : -1);   /* 0: ready; -1: the caller gives up */
    if (!pinned) return 0;
    for (long i = 0; i < p->iters; i++) {
        while (atomic_load_explicit(&p->flag, memory_order_acquire) != 2 * i + 1) {}
        atomic_store_explicit(&p->flag, 2 * i + 2, memory_order_release);
    }
    return 0;
}

/* Mean ns of one round trip over `iters` (the caller's thread is pinned to cpu_a meanwhile and
 * given its affinity back after); -1 when either CPU cannot be pinned or the thread fails. */
static double wb_line_round_trip_ns(int cpu_a, int cpu_b, long iters) {
    wb_pingpong_t p;
    cpu_set_t old;
    pthread_t t;
    struct timespec a, b;
    if (iters < 1 || pthread_getaffinity_np(pthread_self(), sizeof old, &old) != 0) return -1.0;
    atomic_store(&p.flag, -2);
    p.iters = iters;
    p.cpu = cpu_b;
    if (!wb_pin_self(cpu_a)) return -1.0;
    if (pthread_create(&t, 0, wb_pingpong_other, &p) != 0) {
        pthread_setaffinity_np(pthread_self(), sizeof old, &old);
        return -1.0;
    }
    long f;
    while ((f = atomic_load(&p.flag)) == -2) {}
    double ns = -1.0;
    if (f == 0) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long i = 0; i < iters; i++) {
            atomic_store_explicit(&p.flag, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(&p.flag, memory_order_acquire) != 2 * i + 2) {}
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (double)iters;
    }
    pthread_join(t, 0);
    pthread_setaffinity_np(pthread_self(), sizeof old, &old);
    return ns;
}
#endif
