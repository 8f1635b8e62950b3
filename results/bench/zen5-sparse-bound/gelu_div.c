/* The fused GELU (wb_gelu.h's wb_gelu_ps512: a rational erf, one VDIVPS) against the same
 * rational with the division replaced by exact operations only (an integer first guess of 1/q and
 * three Newton steps: the same on AVX2 and AVX-512, so it could keep the two paths' bits equal),
 * on 4096 values in L1; cycles per 16 outputs at the clock measured by dependent adds, and the
 * largest error against erf in double.
 * Build from the repository root and run:
 *   gcc -O2 -std=c11 -Iworkbench_ext results/bench/zen5-sparse-bound/gelu_div.c -o gelu_div -lm && ./gelu_div
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

#include "wb_gelu.h"


/* wb_erf_avx512 with its one division p / q replaced by an integer first guess of 1 / q and three
 * Newton steps */
WB_AVX512F static inline __m512 erf_no_div(__m512 x) {
    __m512 q;
    const __m512 p = wb_erf_pq_avx512(x, &q);
    __m512 r = _mm512_castsi512_ps(_mm512_sub_epi32(_mm512_set1_epi32(0x7EF311C3), _mm512_castps_si512(q)));
    for (int i = 0; i < 3; i++) r = _mm512_mul_ps(r, _mm512_fnmadd_ps(q, r, _mm512_set1_ps(2.0f)));
    return _mm512_mul_ps(p, r);
}

WB_AVX512F static inline __m512 gelu_no_div(__m512 v) {
    const __m512 e = erf_no_div(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

WB_AVX512F int main(void) {
    const int n = 4096;
    float *x = aligned_alloc(64, n * 4), *y = aligned_alloc(64, n * 4);
    for (int i = 0; i < n; i++) x[i] = (i - n / 2) * 8.0f / n;
    const double ghz = clock_ghz();
    for (int v = 0; v < 2; v++) {
        double best = 1e9;
        for (int rep = 0; rep < 20000; rep++) {
            double t0 = now();
            for (int i = 0; i < n; i += 16)
                _mm512_store_ps(y + i, v == 0 ? wb_gelu_ps512(_mm512_load_ps(x + i)) : gelu_no_div(_mm512_load_ps(x + i)));
            double t = now() - t0;
            if (t < best) best = t;
        }
        double maxerr = 0;
        for (int i = 0; i < n; i++) {
            const double ref = 0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0)));
            if (fabs(y[i] - ref) > maxerr) maxerr = fabs(y[i] - ref);
        }
        printf("%s: %.2f cycles per 16 outputs (clock %.2f GHz), largest error %.2e\n",
               v ? "no division (3 Newton steps)" : "wb_gelu_ps512 (VDIVPS)    ", best * ghz * 1e9 / (n / 16), ghz, maxerr);
    }
    return 0;
}
