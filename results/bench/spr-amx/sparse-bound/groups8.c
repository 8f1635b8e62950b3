/* Would 128-row activation tiles (G = 8 groups of 16 rows) speed up the 1x4 block-sparse VNNI
 * loop? The library's 64-row tile function (wb_vnni_sparse_tile_g4) run on two 64-row tiles,
 * against the same loop on one 128-row tile: two columns interleaved (16 accumulators), or one
 * column at a time (8). A G = 8 tile halves the index loads, broadcasts and passes over the
 * weights per VPDPBUSD; its activation tile (K / 4 x 512 bytes) is twice as large. Random 90 %
 * sparse K x N in CSR of 1x4 blocks, one thread, best of 200, three rounds; VPDPBUSDs per cycle
 * at the clock measured by dependent adds.
 * Build from the repository root and run:
 *   gcc -O3 -std=c11 -fopenmp -Iworkbench_ext -Iresults/bench/zen5-sparse-bound \
 *       results/bench/spr-amx/sparse-bound/groups8.c -o groups8 -lm && ./groups8 768 3072
 * (-O3, or the 8-accumulator arrays stay on the stack: at -O2 without the unroll pragma the G = 8
 * loop ran at half the speed.) */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench_clock.h"
#include "wb_int8.h"
#define A512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
static int imin(int a, int b) { return a < b ? a : b; }
#define BLK8(bb, A)                                                                 \
    {                                                                               \
        const __m512i w = _mm512_set1_epi32(*(const int32_t *)(vals + 4 * (size_t)(bb))); \
        const uint8_t *x = X + (size_t)col[bb] * 512;                               \
        _Pragma("GCC unroll 8") for (int g = 0; g < 8; g++) A[g] = _mm512_dpbusd_epi32(A[g], _mm512_loadu_si512((const void *)(x + 64 * g)), w); \
    }
A512 static inline __attribute__((always_inline)) void
pair8(const uint8_t *X, const int32_t *col, const int8_t *vals, int b, int b1, int d, int d1, int32_t *C0, int32_t *C1) {
    __m512i a[8], e[8];
    for (int g = 0; g < 8; g++) a[g] = e[g] = _mm512_setzero_si512();
    const int n = imin(b1 - b, d1 - d);
    for (int i = 0; i < n; i++) { BLK8(b + i, a) BLK8(d + i, e) }
    for (b += n; b < b1; b++) BLK8(b, a)
    for (d += n; d < d1; d++) BLK8(d, e)
    for (int g = 0; g < 8; g++) { _mm512_store_si512(C0 + 16 * g, a[g]); _mm512_store_si512(C1 + 16 * g, e[g]); }
}
A512 static inline __attribute__((always_inline)) void
one8(const uint8_t *X, const int32_t *col, const int8_t *vals, int b, int b1, int32_t *C0) {
    __m512i a[8];
    for (int g = 0; g < 8; g++) a[g] = _mm512_setzero_si512();
    for (; b < b1; b++) BLK8(b, a)
    for (int g = 0; g < 8; g++) _mm512_store_si512(C0 + 16 * g, a[g]);
}
A512 __attribute__((noinline)) static void tile_g8(const uint8_t *X, int n0, int nr, const int32_t *rp, const int32_t *col, const int8_t *vals, int32_t *Ct, int single) {
    if (single) { for (int j = 0; j < nr; j++) one8(X, col, vals, rp[n0 + j], rp[n0 + j + 1], Ct + j * 128); return; }
    for (int j = 0; j + 2 <= nr; j += 2)
        pair8(X, col, vals, rp[n0 + j], rp[n0 + j + 1], rp[n0 + j + 1], rp[n0 + j + 2], Ct + j * 128, Ct + (j + 1) * 128);
}
int main(int argc, char **argv) {
    const int K = atoi(argv[1]), N = atoi(argv[2]), Kb = K / 4;
    srand(1);
    uint8_t *X4a = aligned_alloc(64, (size_t)Kb * 256), *X4b = aligned_alloc(64, (size_t)Kb * 256), *X8 = aligned_alloc(64, (size_t)Kb * 512);
    for (size_t i = 0; i < (size_t)Kb * 256; i++) { X4a[i] = rand(); X4b[i] = rand(); }
    for (size_t q = 0; q < (size_t)Kb; q++) { memcpy(X8 + q * 512, X4a + q * 256, 256); memcpy(X8 + q * 512 + 256, X4b + q * 256, 256); }
    int32_t *rp = malloc((N + 1) * 4), *col = malloc((size_t)N * Kb * 4);
    int8_t *vals = malloc((size_t)N * Kb * 4);
    int nz = 0; rp[0] = 0;
    for (int n = 0; n < N; n++) {
        for (int kb = 0; kb < Kb; kb++)
            if (rand() < 0.1 * RAND_MAX) { col[nz] = kb; for (int t = 0; t < 4; t++) vals[4 * nz + t] = rand(); nz++; }
        rp[n + 1] = nz;
    }
    static int32_t Ct[32 * 128] __attribute__((aligned(64))), Ct2[32 * 64] __attribute__((aligned(64)));
    const double ghz = clock_ghz();
    long check = 0;
    for (int round = 0; round < 3; round++)
    for (int v = 0; v < 3; v++) {
        double best = 1e9;
        for (int rep = 0; rep < 200; rep++) {
            double t0 = now();
            for (int nb = 0; nb < N; nb += 32) {
                if (v == 0) {
                    wb_vnni_sparse_tile_g4(X4a, nb, imin(32, N - nb), rp, col, vals, Ct2); check += Ct2[5];
                    wb_vnni_sparse_tile_g4(X4b, nb, imin(32, N - nb), rp, col, vals, Ct2); check += Ct2[7];
                } else { tile_g8(X8, nb, imin(32, N - nb), rp, col, vals, Ct, v == 2); check += Ct[5]; }
            }
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("K=%d N=%d %s: %.1f us, %.2f VPDPBUSD per cycle\n", K, N, v == 0 ? "G=4 x 2 tiles (library)" : v == 1 ? "G=8 pairs            " : "G=8 one column       ",
               best * 1e6, (double)nz * 8 / (best * ghz * 1e9));
    }
    if (check == 42) printf(" \n");
    return 0;
}
