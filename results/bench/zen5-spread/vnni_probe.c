/* How fast each of the two vCPUs runs AVX-512 VNNI now: two threads pinned to CPUs 0 and 1 start
 * together and each runs the same fixed count of independent vpdpbusd (16 accumulators, no memory
 * traffic); returns each thread's own ns. A vCPU that shares its host core with a busy neighbour
 * (SMT) or runs at a lower clock takes longer. Built and loaded by probe.py
 * (gcc -O2 -mavx512f -mavx512vnni -shared -fPIC). */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

static long iters;
static double took[2];
static _Atomic int ready;
static volatile int sink;

static double now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static void pin(int c) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(c, &s); pthread_setaffinity_np(pthread_self(), sizeof s, &s); }

static void spin_vnni(int cpu) {
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
    __m512i c0 = _mm512_set1_epi32(0), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    __m512i c8 = c0, c9 = c0, c10 = c0, c11 = c0, c12 = c0, c13 = c0, c14 = c0, c15 = c0;
    /* opaque to the compiler, so it cannot fold the sixteen equal chains into one */
    __asm__ volatile("" : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6), "+v"(c7));
    __asm__ volatile("" : "+v"(c8), "+v"(c9), "+v"(c10), "+v"(c11), "+v"(c12), "+v"(c13), "+v"(c14), "+v"(c15));
    atomic_fetch_add(&ready, 1);
    while (atomic_load(&ready) < 2) {}
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
#define DP(c) c = _mm512_dpbusd_epi32(c, a, b)
        DP(c0); DP(c1); DP(c2); DP(c3); DP(c4); DP(c5); DP(c6); DP(c7);
        DP(c8); DP(c9); DP(c10); DP(c11); DP(c12); DP(c13); DP(c14); DP(c15);
#undef DP
        __asm__ volatile("" : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6), "+v"(c7));
        __asm__ volatile("" : "+v"(c8), "+v"(c9), "+v"(c10), "+v"(c11), "+v"(c12), "+v"(c13), "+v"(c14), "+v"(c15));
    }
    took[cpu] = now_ns() - t0;
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                 _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)),
                                             _mm512_add_epi32(_mm512_add_epi32(c12, c13), _mm512_add_epi32(c14, c15))));
    sink = _mm512_reduce_add_epi32(s);
}

static void *other(void *arg) { (void)arg; pin(1); spin_vnni(1); return 0; }

/* Runs n rounds of 16 vpdpbusd on each vCPU at once; ns0/ns1 get each thread's time. */
void vnni_probe(long n, double *ns0, double *ns1) {
    iters = n; atomic_store(&ready, 0);
    cpu_set_t old; pthread_getaffinity_np(pthread_self(), sizeof old, &old);
    pthread_t t; pthread_create(&t, 0, other, 0); pin(0);
    spin_vnni(0);
    pthread_join(t, 0);
    pthread_setaffinity_np(pthread_self(), sizeof old, &old);
    *ns0 = took[0]; *ns1 = took[1];
}

/* Read bandwidth of each vCPU with both reading at once: thread k sums its own buffer of `bytes`
 * (64-byte loads, four accumulators) `reps` times; GB/s per thread in gbs0/gbs1. With a buffer
 * larger than the last-level cache share this is the memory bandwidth the host leaves us. */
static char *bufs[2];
static size_t nbytes;
static long nreps;
static double gbs[2];
static _Atomic int bw_ready;

static void read_bw(int cpu) {
    const __m512i *p = (const __m512i *)bufs[cpu];
    size_t n = nbytes / 64;
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i++) s0 = _mm512_add_epi64(s0, p[i]);  /* touch once: not timed */
    atomic_fetch_add(&bw_ready, 1);
    while (atomic_load(&bw_ready) < 2) {}
    double t0 = now_ns();
    for (long r = 0; r < nreps; r++)
        for (size_t i = 0; i < n; i += 4) {
            s0 = _mm512_add_epi64(s0, p[i]); s1 = _mm512_add_epi64(s1, p[i + 1]);
            s2 = _mm512_add_epi64(s2, p[i + 2]); s3 = _mm512_add_epi64(s3, p[i + 3]);
        }
    gbs[cpu] = (double)nbytes * nreps / (now_ns() - t0);
    sink = _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
}

static void *bw_other(void *arg) { (void)arg; pin(1); read_bw(1); return 0; }

/* buf0/buf1: 64-byte aligned, `bytes` each (a multiple of 256). */
void bw_probe(char *buf0, char *buf1, size_t bytes, long reps, double *gbs0, double *gbs1) {
    bufs[0] = buf0; bufs[1] = buf1; nbytes = bytes; nreps = reps; atomic_store(&bw_ready, 0);
    cpu_set_t old; pthread_getaffinity_np(pthread_self(), sizeof old, &old);
    pthread_t t; pthread_create(&t, 0, bw_other, 0); pin(0);
    read_bw(0);
    pthread_join(t, 0);
    pthread_setaffinity_np(pthread_self(), sizeof old, &old);
    *gbs0 = gbs[0]; *gbs1 = gbs[1];
}
