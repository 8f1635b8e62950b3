/* One (batch, head) pair of fused attention on int8 operands with int32 sums (AVX-512 VNNI), for
 * wb_attn.h when the caller asks for int8 attention (wb_attn_t.mode == WB_ATTN_INT8).
 *
 *   k' = k - mean over the keys of k     a constant vector c: q . (k_j - c) = q . k_j - q . c
 *                                        moves every score of a query row alike, which the
 *                                        softmax cancels; it takes out the offset keys share,
 *                                        so their int8 grid is spent on what tells them apart
 *                                        (SageAttention's "smoothing K")
 *   scores = sq[r] sk[j] (q8 . k8)       q8 = rint(q / sq), sq = max|q row| / 127 (per query
 *                                        row); k8 likewise per key; the sum is exact in int32
 *   e      = rint(255 exp(scores + mask - max))        u8 weights, the row's largest is 255
 *   ctx    = sv[dd] (e . v8) / sum(e)    v8 = rint(v / sv), sv = max over the keys of |v| / 127
 *                                        (per head_dim column); the weights used are the ones
 *                                        summed, so they add up to 1
 *
 * "The keys" in the mean and in sv are the unmasked ones (mask 0; all of them in a row with no
 * unmasked key): padding never moves the grids, so a padded sequence gets the bits it gets alone
 * (tests/test_runtime_packed.py).
 *
 * VPDPBUSD multiplies u8 by s8, so the query row goes in as q8 + 128 (u8) and 128 sum(k8) per
 * key is subtracted after (exact). Roundings: q, k and v to 1/254 of their row's (column's)
 * range, each weight to 1/255 of the row's largest.
 *
 * Layouts (bytes; a quad = 4 consecutive values along the product's summed axis):
 *   Kq [d4 / 4][Sp][4]   s8 k8 quads along head_dim, 16 keys per 64 bytes (zero past d, past S)
 *   Vq [S4 / 4][dp][4]   s8 v8 quads along the keys, 16 columns per 64 bytes (zero past S, d)
 *   row [16][d rounded up to 64]  a block of 16 keys' k8 rows, before the transpose into Kq
 *   Qu [MR][d4]          u8 q8 + 128 of the tile's query rows
 *   Pu [MR][S4]          u8 weights e (zero past S)
 * with d4 = d rounded up to 4, S4 = S rounded up to 4, Sp and dp as in wb_attn.h.
 */
#ifndef WB_ATTN_INT8_H
#define WB_ATTN_INT8_H

#include "wb_attn_int8_tile.h"

/* AVX-512 float code with VNNI: the pair kernel around the integer tiles (never emulated) */
#define WB_ATTN_I8_T __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))

static inline int wb_attn_i8_d4(int d) { return (d + 3) / 4 * 4; }
static inline int wb_attn_i8_s4(int S) { return (S + 3) / 4 * 4; }
static inline size_t wb_attn_i8_up64(size_t n) { return (n + 63) / 64 * 64; }
/* bytes per key row in the K packing's 16-row block: d rounded up to whole 16 x 16-word transposes */
static inline int wb_attn_i8_rowq(int d) { return (d + 63) / 64 * 64; }

typedef struct {
    int8_t *Kq, *Vq, *row;
    uint8_t *Qu, *Pu;
    float *sk, *sv, *kmean;
    int32_t *kc, *P, *C;
} wb_attn_i8_scratch_t;

/* Lays the pair's buffers out in `base` (64-byte aligned); returns the bytes they take. */
static inline size_t wb_attn_i8_layout(long Sp, int S, int dp, int d, char *base, wb_attn_i8_scratch_t *s) {
    const size_t d4 = (size_t)wb_attn_i8_d4(d), S4 = (size_t)wb_attn_i8_s4(S);
    const size_t sizes[] = {d4 * Sp, S4 * dp, 16 * (size_t)wb_attn_i8_rowq(d), WB_ATTN_I8_MR * d4, WB_ATTN_I8_MR * S4,
                            4 * (size_t)Sp, 4 * (size_t)dp, 4 * (size_t)dp,
                            4 * (size_t)Sp, 4 * WB_ATTN_I8_MR * (size_t)Sp, 4 * WB_ATTN_I8_MR * (size_t)dp};
    enum { N = sizeof sizes / sizeof sizes[0] };
    void *ptr[N];
    size_t off = 0;
    for (int i = 0; i < N; i++) { ptr[i] = base ? base + off : NULL; off += wb_attn_i8_up64(sizes[i]); }
    if (s) {
        s->Kq = ptr[0]; s->Vq = ptr[1]; s->row = ptr[2]; s->Qu = ptr[3]; s->Pu = ptr[4];
        s->sk = ptr[5]; s->sv = ptr[6]; s->kmean = ptr[7];
        s->kc = ptr[8]; s->P = ptr[9]; s->C = ptr[10];
    }
    return off;
}

/* scratch of one pair, in floats, with room to align its start to 64 bytes */
static inline size_t wb_attn_i8_scratch_words(long Sp, int S, int dp, int d) {
    return (wb_attn_i8_layout(Sp, S, dp, d, NULL, NULL) + 64) / 4;
}

/* the first n of 16 lanes (none for n <= 0) */
static inline __mmask16 wb_attn_i8_mask(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* rint(x * inv) of the first n of 16 values (the rest 0), as int32 */
WB_ATTN_I8_T static inline __m512i wb_attn_i8_round(const float *x, int n, __m512 inv) {
    return _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(wb_attn_i8_mask(n), x), inv));
}

/* the largest |x| of n floats */
WB_ATTN_I8_T static inline float wb_attn_i8_absmax(const float *x, int n) {
    __m512 m = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_maskz_loadu_ps(wb_attn_i8_mask(n - i), x + i)));
    return _mm512_reduce_max_ps(m);
}

/* Key j of k (kd, ks element strides) as a row of d floats: in place where kd == 1 (the engine's
 * k), else gathered into `tmp` */
static inline const float *wb_attn_i8_key(const float *k, long kd, long ks, long j, int d, float *tmp) {
    if (kd == 1) return k + j * ks;
    for (int dd = 0; dd < d; dd++) tmp[dd] = k[dd * kd + j * ks];
    return tmp;
}

/* Whether key j enters the mean and the grids: unmasked, or every key when none is (`all`). */
static inline int wb_attn_i8_counted(const float *mask, int j, int all) {
    return all || mask[j] == 0.0f;
}

/* 1 when no key of the row is unmasked (then every key counts), else 0 */
static inline int wb_attn_i8_all_masked(const float *mask, int S) {
    for (int j = 0; j < S; j++)
        if (mask[j] == 0.0f) return 0;
    return 1;
}

/* Kq, kc (128 x each key's sum of k8) and sk from k: each key minus the mean of the unmasked
 * keys (wb_attn_i8_counted), on its own int8 grid */
WB_ATTN_I8_T static void wb_attn_i8_pack_k(const float *k, long kd, long ks, int S, int d, long Sp,
                                           const float *mask, int all, const wb_attn_i8_scratch_t *s) {
    const int d4 = wb_attn_i8_d4(d), rq = wb_attn_i8_rowq(d);
    float *mean = s->kmean, *tmp = (float *)s->C;   /* C: free until the context products */
    int n = 0;
    for (int j = 0; j < S; j++) n += wb_attn_i8_counted(mask, j, all);
    for (int d0 = 0; d0 < d; d0 += 16) {   /* 16 columns at a time, summed in a register */
        const __mmask16 m = wb_attn_i8_mask(d - d0);
        __m512 acc = _mm512_setzero_ps();
        for (int j = 0; j < S; j++)
            if (wb_attn_i8_counted(mask, j, all))
                acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, wb_attn_i8_key(k, kd, ks, j, d, tmp) + d0));
        _mm512_storeu_ps(mean + d0, _mm512_mul_ps(acc, _mm512_set1_ps(1.0f / (float)n)));
    }
    /* 16 keys at a time: each quantized into its row of `row` (rq bytes, zero past d), then the
     * 16 rows' quads transposed (16 x 16 words) into Kq */
    for (long j0 = 0; j0 < Sp; j0 += 16) {
        for (int i = 0; i < 16; i++) {
            const long j = j0 + i;
            int8_t *row = s->row + (size_t)i * rq;
            if (j >= S) {
                memset(row, 0, (size_t)rq);
                s->sk[j] = 0.0f;
                s->kc[j] = 0;
                continue;
            }
            /* the centred key kj - mean, formed in registers twice (for its range, then its
             * grid) rather than stored once: a masked store read back stalls the load (measured
             * 1.07x slower on the Zen 4) */
            const float *kj = wb_attn_i8_key(k, kd, ks, j, d, tmp);
            __m512 amax = _mm512_setzero_ps();
            for (int d0 = 0; d0 < d; d0 += 16) {
                const __mmask16 m = wb_attn_i8_mask(d - d0);
                amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, kj + d0), _mm512_loadu_ps(mean + d0))));
            }
            const float mx = _mm512_reduce_max_ps(amax);
            const __m512 inv = _mm512_set1_ps(mx > 0.0f ? 127.0f / mx : 0.0f);
            __m512i sum = _mm512_setzero_si512();
            for (int d0 = 0; d0 < rq; d0 += 16) {
                const __mmask16 m = wb_attn_i8_mask(d - d0);
                const __m512 x = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, kj + d0), _mm512_maskz_loadu_ps(m, mean + d0));
                const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(x, inv));
                sum = _mm512_add_epi32(sum, q);
                _mm_storeu_si128((__m128i *)(row + d0), _mm512_cvtsepi32_epi8(q));
            }
            s->sk[j] = mx * (1.0f / 127.0f);
            s->kc[j] = 128 * _mm512_reduce_add_epi32(sum);
        }
        for (int t0 = 0; t0 < d4 / 4; t0 += 16) {
            __m512 R[16];
            for (int i = 0; i < 16; i++) R[i] = _mm512_loadu_ps((const float *)(s->row + (size_t)i * rq + 4 * t0));
            wb_transpose16(R);   /* R[i]: quad t0 + i of the 16 keys */
            for (int i = 0; i < 16 && t0 + i < d4 / 4; i++) _mm512_storeu_ps((float *)(s->Kq + ((size_t)(t0 + i) * Sp + j0) * 4), R[i]);
        }
    }
}

/* Vq and sv from v (rows vs elements apart, head_dim contiguous); sv from the unmasked keys
 * (a masked key's weight is 0: its v8 may saturate) */
WB_ATTN_I8_T static void wb_attn_i8_pack_v(const float *v, long vs, int S, int d, int dp,
                                           const float *mask, int all, const wb_attn_i8_scratch_t *s) {
    const int S4 = wb_attn_i8_s4(S);
    for (int d0 = 0; d0 < dp; d0 += 16) {
        const __mmask16 m = wb_attn_i8_mask(d - d0);
        __m512 amax = _mm512_setzero_ps();
        for (int j = 0; j < S; j++)
            if (wb_attn_i8_counted(mask, j, all))
                amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, v + j * vs + d0)));
        _mm512_storeu_ps(s->sv + d0, _mm512_mul_ps(amax, _mm512_set1_ps(1.0f / 127.0f)));
        const __m512 inv = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ),
                                               _mm512_set1_ps(127.0f), amax);
        for (int j0 = 0; j0 < S4; j0 += 4) {
            __m128i r[4];   /* keys j0..j0+3, 16 columns of s8 each (zero past S) */
            for (int u = 0; u < 4; u++)
                r[u] = j0 + u < S ? _mm512_cvtsepi32_epi8(wb_attn_i8_round(v + (j0 + u) * vs + d0, d - d0, inv))
                                  : _mm_setzero_si128();
            /* 4 x 16 bytes -> 16 quads (column-major): a 4 x 16 byte transpose */
            const __m128i t0 = _mm_unpacklo_epi8(r[0], r[1]), t1 = _mm_unpackhi_epi8(r[0], r[1]);
            const __m128i t2 = _mm_unpacklo_epi8(r[2], r[3]), t3 = _mm_unpackhi_epi8(r[2], r[3]);
            __m128i *o = (__m128i *)(s->Vq + ((size_t)(j0 / 4) * dp + d0) * 4);
            _mm_storeu_si128(o, _mm_unpacklo_epi16(t0, t2));
            _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(t0, t2));
            _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(t1, t3));
            _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(t1, t3));
        }
    }
}

/* 255 exp(x) for x <= 0, as 2^n 255 2^f (n = round(x log2 e), |f| <= 1/2, 2^f by its degree-4
 * Taylor polynomial: relative error < 5e-5, i.e. < 0.013 of the u8 grid's step of 1); x below
 * -20 (255 e^-20 ~ 5e-7, which rounds to 0) is taken as -20. */
WB_ATTN_I8_T static inline __m512 wb_attn_i8_exp255(__m512 x) {
    const __m512 t = _mm512_mul_ps(_mm512_max_ps(x, _mm512_set1_ps(-20.0f)), _mm512_set1_ps(1.44269504088896341f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(255.0f * 9.6181291076e-3f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(255.0f * 5.5504108665e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(255.0f * 2.4022650696e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(255.0f * 6.9314718056e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(255.0f));
    return _mm512_scalef_ps(p, n);
}

/* One row's weights from its int32 scores p (in place: floats after): x = score + mask,
 * Pu = rint(255 exp(x - max)) (zero from S to S4); returns the sum of Pu. */
WB_ATTN_I8_T static int32_t wb_attn_i8_softmax_row(int32_t *p, float sq, const wb_attn_i8_scratch_t *s,
                                                   const float *mask, int S, uint8_t *pu) {
    float *x = (float *)p;
    const __m512 vq = _mm512_set1_ps(sq);
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < S; j += 16) {
        const __mmask16 m = wb_attn_i8_mask(S - j);
        const __m512i dot = _mm512_sub_epi32(_mm512_loadu_si512(p + j), _mm512_loadu_si512(s->kc + j));
        const __m512 sc = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(vq, _mm512_loadu_ps(s->sk + j)));
        const __m512 xv = _mm512_add_ps(sc, _mm512_maskz_loadu_ps(m, mask + j));
        _mm512_storeu_ps(x + j, xv);
        vmax = _mm512_mask_max_ps(vmax, m, vmax, xv);
    }
    float mx = _mm512_reduce_max_ps(vmax);
    if (mx == -INFINITY) mx = 0.0f;
    const __m512 vm = _mm512_set1_ps(mx);
    __m512i sum = _mm512_setzero_si512();
    for (int j = 0; j < S; j += 16) {
        const __mmask16 m = wb_attn_i8_mask(S - j);
        const __m512i w = _mm512_maskz_cvtps_epi32(m, wb_attn_i8_exp255(_mm512_sub_ps(_mm512_loadu_ps(x + j), vm)));
        sum = _mm512_add_epi32(sum, w);
        /* lanes S.. hold 0: the store also zeroes the keys from S to S4 */
        _mm_mask_storeu_epi8(pu + j, wb_attn_i8_mask(wb_attn_i8_s4(S) - j), _mm512_cvtusepi32_epi8(w));
    }
    return _mm512_reduce_add_epi32(sum);
}

WB_ATTN_I8_T static void wb_attn_pair_int8(const wb_attn_t *a, long pair, float *scratch) {
    const int nh = a->nh, S = a->S, d = a->d, R = a->R;
    const int b = (int)(pair / nh), h = (int)(pair % nh);
    const long Sp = wb_attn_sp(S);
    const int dp = wb_attn_dp(d), d4 = wb_attn_i8_d4(d), S4 = wb_attn_i8_s4(S);
    const float *k = a->k + b * a->kb + h * a->kh;
    const float *mask = a->mask + (size_t)b * S;
    const float *v = a->v + b * a->vb + h * a->vh;
    const float *q0 = a->q + b * a->qb + h * a->qh;
    wb_attn_i8_scratch_t s;
    wb_attn_i8_layout(Sp, S, dp, d, (char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63), &s);
    float *sig = a->sig ? a->sig + ((size_t)b * nh + h) * S : NULL;
    if (sig) for (int j = 0; j < S; j++) sig[j] = 0.0f;
    const int all = wb_attn_i8_all_masked(mask, S);
    wb_attn_i8_pack_k(k, a->kd, a->ks, S, d, Sp, mask, all, &s);
    wb_attn_i8_pack_v(v, a->vs, S, d, dp, mask, all, &s);
    for (int r0 = 0; r0 < R; r0 += WB_ATTN_I8_MR) {
        const int nr = R - r0 < WB_ATTN_I8_MR ? R - r0 : WB_ATTN_I8_MR;
        const uint8_t *qrow[WB_ATTN_I8_MR], *prow[WB_ATTN_I8_MR];
        int32_t *out[WB_ATTN_I8_MR];
        float sq[WB_ATTN_I8_MR];   /* the query rows' scales */
        for (int i = 0; i < nr; i++) {
            const float *qi = q0 + (r0 + i) * a->qr;
            const float amax = wb_attn_i8_absmax(qi, d);
            const __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
            sq[i] = amax / 127.0f;
            for (int dd = 0; dd < d4; dd += 16) {
                const __m512i q = _mm512_add_epi32(wb_attn_i8_round(qi + dd, d - dd, inv), _mm512_set1_epi32(128));
                _mm_mask_storeu_epi8(s.Qu + (size_t)i * d4 + dd, wb_attn_i8_mask(d4 - dd), _mm512_cvtusepi32_epi8(q));
            }
        }
        for (int i = 0; i < WB_ATTN_I8_MR; i++) {   /* a short last tile repeats its last row */
            const int ii = i < nr ? i : nr - 1;
            qrow[i] = s.Qu + (size_t)ii * d4;
            prow[i] = s.Pu + (size_t)ii * S4;
        }
        for (long j0 = 0; j0 < Sp; j0 += 16 * WB_ATTN_I8_NV) {
            for (int i = 0; i < WB_ATTN_I8_MR; i++) out[i] = s.P + (size_t)i * Sp + j0;   /* repeats: spare rows */
            wb_attn_i8_tile(qrow, s.Kq + j0 * 4, (size_t)Sp * 4, d4 / 4, out, WB_ATTN_I8_NV);
        }
        float inv[WB_ATTN_I8_MR];
        for (int i = 0; i < nr; i++) {
            uint8_t *pu = s.Pu + (size_t)i * S4;
            inv[i] = 1.0f / (float)wb_attn_i8_softmax_row(s.P + (size_t)i * Sp, sq[i], &s, mask, S, pu);
            if (sig && mask[r0 + i] == 0.0f)
                for (int j = 0; j < S; j++) sig[j] += (float)pu[j] * inv[i];
        }
        for (int i = 0; i < WB_ATTN_I8_MR; i++) out[i] = s.C + (size_t)i * dp;
        for (int d0 = 0; d0 < dp; d0 += 16 * WB_ATTN_I8_NV) {
            int32_t *o[WB_ATTN_I8_MR];
            for (int i = 0; i < WB_ATTN_I8_MR; i++) o[i] = out[i] + d0;
            const int nv = (dp - d0) / 16 < WB_ATTN_I8_NV ? (dp - d0) / 16 : WB_ATTN_I8_NV;
            wb_attn_i8_tile_nv(prow, s.Vq + (size_t)d0 * 4, (size_t)dp * 4, S4 / 4, o, nv);
        }
        for (int i = 0; i < nr; i++) {
            float *o = a->ctx + (((size_t)b * R + r0 + i) * nh + h) * d;
            const int32_t *c = s.C + (size_t)i * dp;
            const __m512 vi = _mm512_set1_ps(inv[i]);
            for (int dd = 0; dd < d; dd += 16) {
                const __m512 sc = _mm512_mul_ps(_mm512_loadu_ps(s.sv + dd), vi);
                _mm512_mask_storeu_ps(o + dd, wb_attn_i8_mask(d - dd),
                                      _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(c + dd)), sc));
            }
        }
    }
}

#endif
