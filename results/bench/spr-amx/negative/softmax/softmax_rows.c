/* One layer's attention softmax rows (12 heads x 128 queries = 1536 rows of 128 scores) on one
 * thread, outside the kernel: the mask added in its own pass and then the row function (as the
 * fp32 attention kernel does), against both fused into two passes with the sum taken inside the
 * exp loop (fused_passes.patch; the same bits, checked here). The rows are 786 KB, so they come
 * from L2 here; inside the kernel a tile's rows are in L1.
 * Build from the repository root:
 *   gcc -O2 -Iworkbench_ext -I$(.venv/bin/python -c "import sysconfig;print(sysconfig.get_paths()['include'])") \
 *       results/bench/spr-amx/negative/softmax/softmax_rows.c -o /tmp/softmax_rows -lm -lpthread && /tmp/softmax_rows */
#include "wb_ops.h"
#include <stdio.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

/* x = softmax(x + mask) in place, in two passes: the patch's wb_softmax_add_row_avx512, inlined */
WB_AVX512F static void fused(float *x, const float *mask, int H) {
    __m512 vm16 = _mm512_set1_ps(-INFINITY);
    int h = 0;
    for (; h + 16 <= H; h += 16) {
        const __m512 t = _mm512_add_ps(_mm512_loadu_ps(x + h), _mm512_loadu_ps(mask + h));
        _mm512_storeu_ps(x + h, t);
        vm16 = _mm512_max_ps(vm16, t);
    }
    float mx = _mm512_reduce_max_ps(vm16);
    for (int j = h; j < H; j++) x[j] = x[j] + mask[j];
    for (; h < H; h++) mx = x[h] > mx ? x[h] : mx;
    if (mx == -INFINITY) mx = 0.0f;
    const __m512 vm = _mm512_set1_ps(mx);
    const int H8 = H / 8 * 8;
    __m256 vs = _mm256_setzero_ps();
    for (h = 0; h + 16 <= H8; h += 16) {
        const __m512 e = wb_exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + h), vm));
        _mm512_storeu_ps(x + h, e);
        vs = _mm256_add_ps(vs, _mm512_castps512_ps256(e));
        vs = _mm256_add_ps(vs, _mm512_extractf32x8_ps(e, 1));
    }
    if (h < H8) {
        const __m256 e = wb_exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + h), _mm256_set1_ps(mx)));
        _mm256_storeu_ps(x + h, e);
        vs = _mm256_add_ps(vs, e);
    }
    float s = wb_hsum_avx2(vs);
    for (h = H8; h < H; h++) { float e = expf(x[h] - mx); x[h] = e; s += e; }
    const __m512 vi = _mm512_set1_ps(1.0f / s);
    for (h = 0; h + 16 <= H8; h += 16) _mm512_storeu_ps(x + h, _mm512_mul_ps(_mm512_loadu_ps(x + h), vi));
    if (h < H8) _mm256_storeu_ps(x + h, _mm256_mul_ps(_mm256_loadu_ps(x + h), _mm256_set1_ps(1.0f / s)));
    const float inv = 1.0f / s;
    for (h = H8; h < H; h++) x[h] *= inv;
}

static void kernel_order(float *x, const float *mask, int H) {
    for (int j = 0; j < H; j++) x[j] = x[j] + mask[j];
    wb_softmax_row_avx512(x, H, x);
}

enum { ROWS = 1536, S = 128 };

static void layer(float *P, const float *P0, const float *mask, int v) {
    memcpy(P, P0, sizeof(float) * ROWS * S);
    for (int r = 0; r < ROWS; r++) (v ? fused : kernel_order)(P + (size_t)r * S, mask, S);
}

int main(void) {
    float *P0 = malloc(sizeof(float) * ROWS * S), *P = malloc(sizeof(float) * ROWS * S),
          *Q = malloc(sizeof(float) * ROWS * S), mask[S];
    srand(1);
    for (int i = 0; i < ROWS * S; i++) P0[i] = (rand() / (float)RAND_MAX - 0.5f) * 8;
    for (int j = 0; j < S; j++) mask[j] = j > 120 ? -1e4f : 0.0f;   /* 7 padded keys */
    layer(P, P0, mask, 0);
    layer(Q, P0, mask, 1);
    printf("fused gives the kernel order's bits: %s\n", memcmp(P, Q, sizeof(float) * ROWS * S) ? "NO" : "yes");
    double best[3] = {1e9, 1e9, 1e9};
    for (int rep = 0; rep < 40; rep++)
        for (int v = 0; v < 3; v++) {
            const double t = now();
            for (int k = 0; k < 10; k++) {
                if (v < 2) layer(P, P0, mask, v);
                else memcpy(P, P0, sizeof(float) * ROWS * S);   /* the copy alone */
            }
            const double per = (now() - t) / 10;
            if (per < best[v]) best[v] = per;
        }
    const double c = best[2];
    printf("1536 rows of 128, 1 thread, best of 40 (the 786 KB copy before each, %.1f us, taken off): "
           "mask pass + row function %.1f us, fused %.1f us (%.2fx)\n",
           c * 1e6, (best[0] - c) * 1e6, (best[1] - c) * 1e6, (best[0] - c) / (best[1] - c));
    return 0;
}
