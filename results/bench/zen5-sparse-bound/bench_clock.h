/* The harnesses' wall clock and their estimate of the core clock (a chain of dependent adds, one
 * cycle each), so each program reports per-cycle rates from its own measurement. */
#ifndef ZEN5_BENCH_CLOCK_H
#define ZEN5_BENCH_CLOCK_H

#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double clock_ghz(void) {
    const long n = 400000000;
    long x = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) __asm__ volatile("add $1, %0" : "+r"(x));
    return n / (now() - t0) / 1e9;
}

#endif
