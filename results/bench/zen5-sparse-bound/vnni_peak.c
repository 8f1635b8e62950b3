/* VPDPBUSD zmm throughput: 8 independent accumulators with register operands, per cycle at the
 * clock measured by a chain of dependent adds.
 *   gcc -O2 results/bench/zen5-sparse-bound/vnni_peak.c -o vnni_peak && ./vnni_peak
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "bench_clock.h"

#define A512 __attribute__((target("avx512f,avx512bw,avx512vnni")))


A512 int main(void) {
    const double ghz = clock_ghz();
    __m512i a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm512_set1_epi32(i);
    __m512i x = _mm512_set1_epi32(3), w = _mm512_set1_epi32(5);
    const long n = 200000000;
    double t0 = now();
    for (long i = 0; i < n; i++) {
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) a[j] = _mm512_dpbusd_epi32(a[j], x, w);
        __asm__ volatile("" : "+v"(x));
    }
    double t = now() - t0;
    int s = 0;
    for (int i = 0; i < 8; i++) s += _mm512_reduce_add_epi32(a[i]);
    printf("registers: %.2f VPDPBUSD per cycle (clock %.2f GHz) %c\n", n * 8 / t / (ghz * 1e9), ghz, s == 42 ? ' ' : '.');
    return 0;
}
