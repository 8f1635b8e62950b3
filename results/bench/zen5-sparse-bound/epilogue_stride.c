/* The sparse kernels' column-major epilogue (wb_sparse_epilogue.h, the library's own code) alone:
 * one 64-row tile of int32 sums per 32 output columns, written to a 64-byte-aligned float output
 * of N columns with row stride `ld` floats, with or without the fused GELU; one thread, best of
 * 500; cycles per output at the clock measured by a chain of dependent adds.
 * Build from the repository root and run:
 *   gcc -O3 -std=c11 -fopenmp -Iworkbench_ext results/bench/zen5-sparse-bound/epilogue_stride.c \
 *       -o epilogue_stride -lm && ./epilogue_stride N gelu(0/1) [ld]
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_clock.h"

#include "wb_int8.h"


int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s N gelu(0/1) [ld]\n", argv[0]);
        return 2;
    }
    const int M = 64, N = atoi(argv[1]), gelu = atoi(argv[2]), ld = argc > 3 ? atoi(argv[3]) : N;
    int32_t *wsum = malloc(N * 4), *zp = malloc(M * 4);
    float *wscale = malloc(N * 4), *bias = malloc(N * 4), *xs = malloc(M * 4);
    for (int i = 0; i < N; i++) wsum[i] = rand() % 1000, wscale[i] = 0.01f, bias[i] = 0.1f;
    for (int i = 0; i < M; i++) zp[i] = rand() % 255, xs[i] = 0.02f;
    float *y = aligned_alloc(64, (size_t)M * ld * 4);
    static int32_t Ct[WB_SPV_NC * 64] __attribute__((aligned(64)));
    for (int i = 0; i < WB_SPV_NC * 64; i++) Ct[i] = rand() % 100000;
    wb_epi_t e = {ld, wsum, wscale, bias, zp, xs, y, NULL, gelu ? WB_ACT_GELU_AVX512 : WB_ACT_NONE, 0};
    const double ghz = clock_ghz();
    double best = 1e9;
    for (int rep = 0; rep < 500; rep++) {
        double t0 = now();
        for (int nb = 0; nb < N; nb += WB_SPV_NC) wb_sparse_colmajor_epilogue_avx512(Ct, 0, M, nb, WB_SPV_NC, &e);
        double t = now() - t0;
        if (t < best) best = t;
    }
    printf("N=%d ld=%d gelu=%d: %.1f us, %.2f cycles per output (clock %.2f GHz; y %g)\n", N, ld, gelu,
           best * 1e6, best * ghz * 1e9 / (64.0 * N), ghz, y[77]);
    return 0;
}
