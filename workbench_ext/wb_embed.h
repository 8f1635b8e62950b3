/* The embedding lookup: y[i] = table[ids[i]] (fp32, or fp16 widened) + add[add_ids[i]]
 * (workbench_ext.ops.embed_rows; the runtime's first step, before the embeddings' LayerNorm).
 *
 * The int8 engines keep the word embeddings in fp16 (workbench.runtime.compiler). NumPy's
 * gather then astype(float32) widened them one value at a time: 170 us of a 5.6 ms batch-1
 * forward (DistilBERT-base, 128 tokens, 90 % sparse, Zen 4). Widening fp16 is exact, and the
 * add is one fp32 addition per value as in NumPy, so the result has the same bits. */
#ifndef WB_EMBED_H
#define WB_EMBED_H

#include <string.h>
#include "wb_common.h"

/* fp16 -> fp32, exact (subnormals, infinities and NaNs included) */
static inline float wb_half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0 && man == 0) {
        bits = sign;
    } else if (exp == 0) {             /* subnormal: man * 2^-24, normalised */
        exp = 127 - 15 + 1;
        while (!(man & 0x400u)) { man <<= 1; exp--; }
        bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* y[h] = widened src[h] (+ add[h] when add != NULL), h < n */
static void wb_embed_row_half(const uint16_t *src, const float *add, int n, float *y) {
    for (int h = 0; h < n; h++) y[h] = add ? wb_half_to_float(src[h]) + add[h] : wb_half_to_float(src[h]);
}

/* wb_embed_row_half with F16C, 8 values at a time (the tail through wb_embed_row_half) */
__attribute__((target("avx2,fma,f16c"))) static void
wb_embed_row_f16c(const uint16_t *src, const float *add, int H, float *y) {
    int h = 0;
    for (; h + 8 <= H; h += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + h)));
        if (add) v = _mm256_add_ps(v, _mm256_loadu_ps(add + h));
        _mm256_storeu_ps(y + h, v);
    }
    wb_embed_row_half(src + h, add ? add + h : NULL, H - h, y + h);
}

typedef struct {
    const void *table; int half; const int64_t *ids;
    const float *add; const int64_t *add_ids; int H; float *y; int f16c;
} wb_embed_job_t;

static void wb_embed_chunk(void *p, long b, long e) {
    const wb_embed_job_t *j = (const wb_embed_job_t *)p;
    const size_t H = (size_t)j->H;
    for (long i = b; i < e; i++) {
        float *y = j->y + (size_t)i * H;
        const float *add = j->add ? j->add + (size_t)j->add_ids[i] * H : NULL;
        if (!j->half) {
            const float *src = (const float *)j->table + (size_t)j->ids[i] * H;
            if (add) for (size_t h = 0; h < H; h++) y[h] = src[h] + add[h];
            else memcpy(y, src, H * sizeof(float));
        } else {
            const uint16_t *src = (const uint16_t *)j->table + (size_t)j->ids[i] * H;
            if (j->f16c) wb_embed_row_f16c(src, add, j->H, y);
            else wb_embed_row_half(src, add, j->H, y);
        }
    }
}

/* y [n, H] = table[ids] (+ add[add_ids] when add != NULL); table fp32 (half 0) or fp16
 * (half 1, widened with F16C when f16c); ids and add_ids already checked in range. */
static void wb_embed_rows(const void *table, int half, const int64_t *ids, long n, int H,
                          const float *add, const int64_t *add_ids, float *y, int f16c, int nt) {
    nt = wb_threads(nt);
    wb_embed_job_t job = {table, half, ids, add, add_ids, H, y, f16c};
    wb_parallel_for(n * H > 32768L ? nt : 1, n, wb_grain(n, nt, 2), wb_embed_chunk, &job);
}

#endif
