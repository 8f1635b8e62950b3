/* Weight packing and static activation quantization of the int8 kernels (construction time);
 * the layouts are listed in wb_int8.h. */
#ifndef WB_INT8_PACK_H
#define WB_INT8_PACK_H

#include "wb_quant.h"

/* ========================================================================================
 * Packing (construction time)
 * ====================================================================================== */
static void wb_wsum(const int8_t *w, int N, int K, int32_t *wsum) {
    for (int n = 0; n < N; n++) {
        int32_t s = 0;
        for (int k = 0; k < K; k++) s += w[(size_t)n * K + k];
        wsum[n] = s;
    }
}

static void wb_pack_dense_portable(const int8_t *w, int N, int K, int Kp, int8_t *out) {
    memset(out, 0, (size_t)N * Kp);
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * Kp, w + (size_t)n * K, (size_t)K);
}

/* out: int16 [NP16][Kp/4][2 halves][odd, even][8 columns][2], zero-filled by the caller; for
 * column n of half h and k-quad q: odd = (w[4q+1], w[4q+3]), even = (w[4q], w[4q+2]) -- the
 * layout of the AVX2 pair-product kernel below.  eta[n] = sum_i w[2i] w[2i+1] (NP16*16 entries,
 * zero past N) is the weight-side correction term of that kernel. */
static void wb_pack_dense_avx2(const int8_t *w, int N, int K, int Kp, int16_t *out, int32_t *eta) {
    const size_t panel = (size_t)Kp * 16;
    for (int n = 0; n < N; n++) {
        const int8_t *wr = w + (size_t)n * K;
        int16_t *pp = out + (n / 16) * panel + ((n % 16) / 8) * 32 + (n % 8) * 2;
        int32_t t = 0;
        for (int k = 0; k < K; k++) {
            const int q = k / 4, i = k % 4;
            /* odd k to the first 16 s16 of the half, even k to the second */
            pp[(size_t)q * 64 + (i & 1 ? 0 : 16) + (i >> 1)] = wr[k];
            if (i & 1) t += (int32_t)wr[k - 1] * wr[k];
        }
        eta[n] = t;
    }
}

/* out: int8 [NP][Kp/4][16][4], zero-filled by the caller */
static void wb_pack_dense_vnni(const int8_t *w, int N, int K, int Kp, int8_t *out) {
    const size_t panel = (size_t)(Kp / 4) * 64;
    for (int n = 0; n < N; n++) {
        int p = n / 16, j = n % 16;
        for (int k = 0; k < K; k++)
            out[p * panel + (size_t)(k / 4) * 64 + j * 4 + (k & 3)] = w[(size_t)n * K + k];
    }
}

/* Static (per-tensor, calibrated ahead of time) u8 quantization of rows into q[M][Kp]: the
 * same formula as wb_quantize_static (q = clamp(rint(x * (1/scale)) + zp, 0, 255)), pad
 * columns zero. */
typedef struct {
    const float *x; int K, Kp; float inv, zpf; uint8_t *q; int isa;
} wb_quant_static_job_t;

static void wb_quant_static_chunk(void *p, long b, long e) {
    const wb_quant_static_job_t *j = (const wb_quant_static_job_t *)p;
    for (long m = b; m < e; m++) {
        const float *r = j->x + (size_t)m * j->K;
        uint8_t *o = j->q + (size_t)m * j->Kp;
        wb_quant_apply(j->isa, r, (size_t)j->K, j->inv, j->zpf, 255.0f, o);
        memset(o + j->K, 0, (size_t)(j->Kp - j->K));
    }
}

static void wb_quantize_rows_static(const float *x, int M, int K, int Kp, float scale, int32_t zp,
                                    uint8_t *q, int isa, int nt) {
    nt = wb_threads(nt);
    wb_quant_static_job_t job = {x, K, Kp, 1.0f / scale, (float)zp, q, isa};
    wb_parallel_for((long)M * K > 32768 ? nt : 1, M, wb_grain(M, nt, 2), wb_quant_static_chunk, &job);
}

#endif
