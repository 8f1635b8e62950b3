/* How close the 1x4 block-sparse VNNI kernel's inner loop runs to its bound, without its
 * epilogue, quantization or threads: one 64-row activation tile (G = 4 groups of 16 rows, packed
 * as wb_sparse_pack.h packs them) against a random 90 %-sparse weight of K x N in CSR of 1x4
 * blocks, every 32-column tile of N in turn, one thread, best of 300.
 *
 *   variant 0  the library's own tile function (wb_vnni_sparse_tile_g4 from workbench_ext: two
 *              columns interleaved, accumulators in registers for the whole of K)
 *   variant 1  its loop with K cut into `nch` chunks (row pointers per column and chunk, as the AVX2
 *              kernel's K chunks), accumulators stored and reloaded between chunks, NC columns per
 *              tile: does keeping the activation chunk in L1 pay?
 *
 * Prints VPDPBUSDs per cycle (each is one 64-byte activation load: the 1x4 layout cannot reuse a
 * loaded activation vector for a second column). The clock is measured by a chain of dependent
 * adds.
 * Build from the repository root and run:
 *   gcc -O2 -std=c11 -fopenmp -Iworkbench_ext results/bench/zen5-sparse-bound/kernel_bound.c \
 *       -o kernel_bound -lm && ./kernel_bound K N [NC nch]
 */
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
#define TILE_BYTES (64 * 4) /* one 4-byte K group of 64 rows (4 groups of 16) */

static int imin(int a, int b) { return a < b ? a : b; }

/* one block: 4 weights broadcast, 4 VPDPBUSDs on the 64 rows of its K group */
#define BLOCK(bb, A0, A1, A2, A3)                                                                  \
    {                                                                                              \
        int32_t wv;                                                                                \
        memcpy(&wv, vals + 4 * (size_t)(bb), 4);                                                   \
        const __m512i w = _mm512_set1_epi32(wv);                                                   \
        const uint8_t *x = X + (size_t)col[bb] * TILE_BYTES;                                       \
        A0 = _mm512_dpbusd_epi32(A0, _mm512_loadu_si512((const void *)x), w);                      \
        A1 = _mm512_dpbusd_epi32(A1, _mm512_loadu_si512((const void *)(x + 64)), w);               \
        A2 = _mm512_dpbusd_epi32(A2, _mm512_loadu_si512((const void *)(x + 128)), w);              \
        A3 = _mm512_dpbusd_epi32(A3, _mm512_loadu_si512((const void *)(x + 192)), w);              \
    }

/* two columns: blocks b..b1 and d..d1, into C0 / C1 (64 sums each); `first`: start from zero,
 * else from what C0 / C1 hold */
A512 static inline __attribute__((always_inline)) void
pair(const uint8_t *X, const int32_t *col, const int8_t *vals, int b, int b1, int d, int d1,
     int32_t *C0, int32_t *C1, int first) {
    __m512i a0, a1, a2, a3, e0, e1, e2, e3;
    if (first) {
        a0 = a1 = a2 = a3 = e0 = e1 = e2 = e3 = _mm512_setzero_si512();
    } else {
        a0 = _mm512_load_si512(C0), a1 = _mm512_load_si512(C0 + 16);
        a2 = _mm512_load_si512(C0 + 32), a3 = _mm512_load_si512(C0 + 48);
        e0 = _mm512_load_si512(C1), e1 = _mm512_load_si512(C1 + 16);
        e2 = _mm512_load_si512(C1 + 32), e3 = _mm512_load_si512(C1 + 48);
    }
    const int n = imin(b1 - b, d1 - d);
    for (int i = 0; i < n; i++) {
        BLOCK(b + i, a0, a1, a2, a3)
        BLOCK(d + i, e0, e1, e2, e3)
    }
    for (b += n; b < b1; b++) BLOCK(b, a0, a1, a2, a3)
    for (d += n; d < d1; d++) BLOCK(d, e0, e1, e2, e3)
    _mm512_store_si512(C0, a0), _mm512_store_si512(C0 + 16, a1);
    _mm512_store_si512(C0 + 32, a2), _mm512_store_si512(C0 + 48, a3);
    _mm512_store_si512(C1, e0), _mm512_store_si512(C1 + 16, e1);
    _mm512_store_si512(C1 + 32, e2), _mm512_store_si512(C1 + 48, e3);
}

A512 static void tile_k_chunks(const uint8_t *X, int n0, int nr, const int32_t *rpc, int nch,
                               const int32_t *col, const int8_t *vals, int32_t *Ct) {
    for (int c = 0; c < nch; c++)
        for (int j = 0; j + 2 <= nr; j += 2) {
            const int32_t *r0 = rpc + (size_t)(n0 + j) * (nch + 1), *r1 = r0 + nch + 1;
            pair(X, col, vals, r0[c], r0[c + 1], r1[c], r1[c + 1], Ct + j * 64, Ct + (j + 1) * 64, c == 0);
        }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s K N [NC nch]\n", argv[0]);
        return 2;
    }
    const int K = atoi(argv[1]), N = atoi(argv[2]), Kb = K / 4;
    const int NC = argc > 3 ? atoi(argv[3]) : 32, nch = argc > 4 ? atoi(argv[4]) : 4;
    srand(1);
    uint8_t *X = aligned_alloc(64, (size_t)Kb * TILE_BYTES);
    for (size_t i = 0; i < (size_t)Kb * TILE_BYTES; i++) X[i] = (uint8_t)rand();
    int32_t *rp = malloc((N + 1) * 4), *col = malloc((size_t)N * Kb * 4);
    int8_t *vals = malloc((size_t)N * Kb * 4);
    int nz = 0;
    rp[0] = 0;
    for (int n = 0; n < N; n++) {
        for (int kb = 0; kb < Kb; kb++)
            if (rand() < 0.1 * RAND_MAX) {
                col[nz] = kb;
                for (int t = 0; t < 4; t++) vals[4 * nz + t] = (int8_t)rand();
                nz++;
            }
        rp[n + 1] = nz;
    }
    int32_t *rpc = malloc((size_t)N * (nch + 1) * 4);
    const int kc = (Kb + nch - 1) / nch;
    for (int n = 0; n < N; n++) {
        int b = rp[n];
        for (int c = 0; c < nch; c++) {
            rpc[n * (nch + 1) + c] = b;
            while (b < rp[n + 1] && col[b] < (c + 1) * kc) b++;
        }
        rpc[n * (nch + 1) + nch] = rp[n + 1];
    }
    static int32_t Ct[128 * 64] __attribute__((aligned(64)));
    const double ghz = clock_ghz();
    long check[2] = {0, 0};
    for (int variant = 0; variant < 2; variant++) {
        const int step = variant ? NC : 32;
        double best = 1e9;
        for (int rep = 0; rep < 300; rep++) {
            double t0 = now();
            for (int nb = 0; nb < N; nb += step) {
                if (variant == 0) wb_vnni_sparse_tile_g4(X, nb, imin(32, N - nb), rp, col, vals, Ct);
                else tile_k_chunks(X, nb, imin(NC, N - nb), rpc, nch, col, vals, Ct);
                check[variant] += Ct[5];
            }
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("K=%d N=%d %s: %.1f us, %.2f VPDPBUSD per cycle (clock %.2f GHz)\n", K, N,
               variant ? "K chunks" : "whole K ", best * 1e6, (double)nz * 4 / (best * ghz * 1e9), ghz);
    }
    if (check[0] == 42 && check[1] == 42) printf(" \n");   /* keeps the sums live */
    return 0;
}
