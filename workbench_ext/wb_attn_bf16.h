/* One (batch, head) pair of fused attention with bf16 operands and fp32 sums (AVX512-BF16),
 * for wb_attn.h when the caller asks for bf16 attention (wb_attn_t.bf16).
 *
 *   scores = bf16(q) . bf16(k)        VDPBF16PS: products of two bf16 are exact in fp32, sums fp32
 *   e      = bf16(exp(scores + mask - max))     fp32 exp, rounded once
 *   ctx    = (e . bf16(v)) / sum(e)  VDPBF16PS, then one scale per row (the weights used are
 *                                    exactly the ones summed, so they add up to 1)
 *
 * VDPBF16PS does 32 multiply-adds per instruction where VFMADD231PS does 16, at the same issue
 * rate on Zen 4, so the two products take about half the fp32 kernel's time; the roundings
 * (8-bit significands for q, k, v and the probabilities) add ~2^-9 relative error per operand.
 * Conversion: round to nearest even (wb_bf16_convert.h).
 *
 * Layouts, in 32-bit words (a word = a pair of bf16 along the product's summed axis):
 *   Kr [Sp][d2p]  bf16(k[j][0..d-1]) per key j (zero past d and for j >= S): a converted row in
 *                 its natural order is already the (k[j][2t], k[j][2t+1]) pairs
 *   Kb [d2p][Sp]  Kr transposed (16 x 16 word blocks): one vector = 16 keys' pair t
 *   Vb [S2][dp]   (v[2u][dd], v[2u+1][dd]): one vector = 16 head_dim columns' key pair u
 *   Qb [16][d2p], Pb [16][Sp / 2]   query rows / weight rows e, converted in order
 *   P [16][Sp], C [16][dp]          fp32 scores (then e, for significance) / context rows
 *                                   (16 rows for AMX blocks; AVX-512 tiles use the first 4)
 * with d2 = ceil(d / 2), d2p = d2 rounded up to 16, S2 = ceil(S / 2), Sp and dp as in wb_attn.h.
 *
 * On AMX CPUs (amx = 1) the two products run on tiles, 16 query rows at a time
 * (wb_attn_amx.h), on the same packed operands; Vb then has S2p = S2 rounded up to 16 rows and
 * Pb's rows are zero up to 2 S2p keys (the tiles take whole 16-pair chunks).
 */
#ifndef WB_ATTN_BF16_H
#define WB_ATTN_BF16_H

#include "wb_bf16_convert.h"
#include "wb_attn_amx.h"

#define WB_ATTN_BF16_MR 4    /* query rows per AVX-512 tile */
#define WB_ATTN_BF16_ROWS 16 /* query rows per block: 16 on AMX, the AVX-512 tiles use the first 4 */
#define WB_ATTN_BF16_NV 4    /* vectors of 16 columns per tile: 64 keys (Sp is a multiple) or head_dim columns */

static inline int wb_attn_bf16_d2p(int d) { return ((d + 1) / 2 + 15) / 16 * 16; }

static inline int wb_attn_bf16_s2p(int S) { return ((S + 1) / 2 + 15) / 16 * 16; }

/* scratch of one pair, in floats (= 32-bit words) */
static inline size_t wb_attn_bf16_scratch_words(long Sp, int S, int dp, int d) {
    const size_t d2p = (size_t)wb_attn_bf16_d2p(d), S2p = (size_t)wb_attn_bf16_s2p(S);
    return 2 * (size_t)Sp * d2p + S2p * (size_t)dp
           + WB_ATTN_BF16_ROWS * (d2p + (size_t)Sp + (size_t)Sp / 2 + (size_t)dp);
}

/* n floats -> bf16 in order, then zero up to `pad` values */
WB_BF16 static inline void wb_attn_bf16_row(const float *x, int n, uint16_t *out, int pad) {
    wb_bf16_convert_avx512(x, (size_t)n, out);
    for (int i = n; i < pad; i++) out[i] = 0;
}

/* One row's weights: x = scores + mask, e = bf16(exp(x - max)) into pb (keys S.. up to a whole
 * 16 get 0), and the sum of the rounded e; with `keep` the fp32 e also go back into p. */
WB_BF16 static float wb_attn_bf16_softmax_row(float *p, const float *mask, int S, uint16_t *pb, int keep) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < S; j += 16) {
        const __mmask16 m = S - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (S - j)) - 1);
        const __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, p + j), _mm512_maskz_loadu_ps(m, mask + j));
        _mm512_mask_storeu_ps(p + j, m, x);
        vmax = _mm512_mask_max_ps(vmax, m, vmax, x);
    }
    float mx = _mm512_reduce_max_ps(vmax);
    if (mx == -INFINITY) mx = 0.0f;
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 vs = _mm512_setzero_ps();
    for (int j = 0; j < S; j += 16) {
        const __mmask16 m = S - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (S - j)) - 1);
        const __m512 e = _mm512_maskz_mov_ps(m, wb_exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p + j), vm)));
        const __m256i eb = (__m256i)_mm512_cvtneps_pbh(e);
        _mm256_storeu_si256((__m256i *)(pb + j), eb);
        vs = _mm512_add_ps(vs, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(eb), 16)));
        if (keep) _mm512_mask_storeu_ps(p + j, m, e);
    }
    return _mm512_reduce_add_ps(vs);
}

/* out[i][16 c ..] = sum_t a[i][t] . B[t][16 c ..] for MR rows and nv vectors of 16 columns, one
 * VDPBF16PS chain per output: the scores (a = Qb rows, B = Kb from key j0, t over head_dim
 * pairs) and the context (a = Pb rows, B = Vb from column d0, t over key pairs). */
WB_BF16 static inline __attribute__((always_inline)) void
wb_attn_bf16_tile(const uint32_t *const *a, const uint32_t *restrict B, size_t ldb, int n, float *const *out,
                  const int nv) {
    __m512 acc[WB_ATTN_BF16_MR][WB_ATTN_BF16_NV];
    for (int i = 0; i < WB_ATTN_BF16_MR; i++)
        for (int c = 0; c < nv; c++) acc[i][c] = _mm512_setzero_ps();
    for (int t = 0; t < n; t++) {
        const uint32_t *bt = B + (size_t)t * ldb;
        __m512bh w[WB_ATTN_BF16_NV];
        for (int c = 0; c < nv; c++) w[c] = (__m512bh)_mm512_loadu_si512(bt + 16 * c);
        for (int i = 0; i < WB_ATTN_BF16_MR; i++) {
            const __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[i][t]);
            for (int c = 0; c < nv; c++) acc[i][c] = _mm512_dpbf16_ps(acc[i][c], x, w[c]);
        }
    }
    for (int i = 0; i < WB_ATTN_BF16_MR; i++)
        for (int c = 0; c < nv; c++) _mm512_storeu_ps(out[i] + 16 * c, acc[i][c]);
}

/* Kr, then Kb = Kr transposed; Vb */
WB_BF16 static void wb_attn_bf16_pack_kv(const float *k, long kd, long ks, const float *v, long vs, int S, int d,
                                         long Sp, int dp, uint32_t *Kr, uint32_t *Kb, uint32_t *Vb) {
    const int d2p = wb_attn_bf16_d2p(d), S2 = (S + 1) / 2;
    for (int j = 0; j < S; j++) {
        uint16_t *row = (uint16_t *)(Kr + (size_t)j * d2p);
        if (kd == 1) wb_attn_bf16_row(k + j * ks, d, row, 2 * d2p);
        else {
            for (int dd = 0; dd < d; dd++) row[dd] = wb_bf16_rne(k[dd * kd + j * ks]);
            for (int dd = d; dd < 2 * d2p; dd++) row[dd] = 0;
        }
    }
    memset(Kr + (size_t)S * d2p, 0, sizeof(uint32_t) * (size_t)(Sp - S) * d2p);
    for (long j0 = 0; j0 < Sp; j0 += 16)
        for (int t0 = 0; t0 < d2p; t0 += 16) {
            __m512 R[16];
            for (int i = 0; i < 16; i++) R[i] = _mm512_castsi512_ps(_mm512_loadu_si512(Kr + (size_t)(j0 + i) * d2p + t0));
            wb_transpose16(R);
            for (int i = 0; i < 16; i++) _mm512_storeu_si512(Kb + (size_t)(t0 + i) * Sp + j0, _mm512_castps_si512(R[i]));
        }
    const int dv = d / 16 * 16;
    for (int u = 0; u < S2; u++) {
        const float *v0 = v + (long)(2 * u) * vs, *v1 = 2 * u + 1 < S ? v0 + vs : NULL;
        uint32_t *o = Vb + (size_t)u * dp;
        for (int dd = 0; dd < dv; dd += 16) {
            const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(v0 + dd)));
            const __m512i hi = v1 ? _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(v1 + dd)))
                                  : _mm512_setzero_si512();
            _mm512_storeu_si512(o + dd, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
        for (int dd = dv; dd < dp; dd++)
            o[dd] = dd < d ? (uint32_t)wb_bf16_rne(v0[dd]) | (v1 ? (uint32_t)wb_bf16_rne(v1[dd]) << 16 : 0u) : 0u;
    }
    memset(Vb + (size_t)S2 * dp, 0, sizeof(uint32_t) * (size_t)(wb_attn_bf16_s2p(S) - S2) * dp);
}

WB_BF16 static void wb_attn_pair_bf16(const wb_attn_t *a, long pair, float *scratch, int amx) {
    const int nh = a->nh, S = a->S, d = a->d, R = a->R;
    const int b = (int)(pair / nh), h = (int)(pair % nh);
    const long Sp = wb_attn_sp(S);
    const int dp = wb_attn_dp(d), d2 = (d + 1) / 2, d2p = wb_attn_bf16_d2p(d), S2 = (S + 1) / 2;
    const int S2p = wb_attn_bf16_s2p(S), rows = amx ? WB_ATTN_BF16_ROWS : WB_ATTN_BF16_MR;
    const float *k = a->k + b * a->kb + h * a->kh;
    const float *mask = a->mask + (size_t)b * S;
    const float *v = a->v + b * a->vb + h * a->vh;
    const float *q0 = a->q + b * a->qb + h * a->qh;
    uint32_t *Kr = (uint32_t *)scratch, *Kb = Kr + (size_t)Sp * d2p, *Vb = Kb + (size_t)Sp * d2p;
    uint32_t *Qb = Vb + (size_t)S2p * dp, *Pb = Qb + (size_t)WB_ATTN_BF16_ROWS * d2p;
    float *P = (float *)(Pb + (size_t)WB_ATTN_BF16_ROWS * (Sp / 2)), *C = P + (size_t)WB_ATTN_BF16_ROWS * Sp;
    float *sig = a->sig ? a->sig + ((size_t)b * nh + h) * S : NULL;
    if (sig) for (int j = 0; j < S; j++) sig[j] = 0.0f;
    wb_attn_bf16_pack_kv(k, a->kd, a->ks, v, a->vs, S, d, Sp, dp, Kr, Kb, Vb);
    for (int r0 = 0; r0 < R; r0 += rows) {
        const int nr = R - r0 < rows ? R - r0 : rows;
        const uint32_t *qrow[WB_ATTN_BF16_MR], *prow[WB_ATTN_BF16_MR];
        float *out[WB_ATTN_BF16_MR];
        for (int i = 0; i < nr; i++)   /* zero past head_dim: the tiles take whole chunks */
            wb_attn_bf16_row(q0 + (r0 + i) * a->qr, d, (uint16_t *)(Qb + (size_t)i * d2p), 2 * d2p);
        for (int i = 0; i < WB_ATTN_BF16_MR; i++) {   /* a short last AVX-512 tile repeats its last row */
            const int ii = i < nr ? i : nr - 1;
            qrow[i] = Qb + (size_t)ii * d2p;
            prow[i] = Pb + (size_t)ii * (Sp / 2);
        }
        if (amx) {   /* a short last block: zero query rows (their outputs are not copied out) */
            memset(Qb + (size_t)nr * d2p, 0, sizeof(uint32_t) * (size_t)(rows - nr) * d2p);
            wb_attn_amx_scores(Qb, d2p, Kb, Sp, (int)(Sp / 16), P, Sp);
        } else {
            for (int j0 = 0; j0 < Sp; j0 += 16 * WB_ATTN_BF16_NV) {
                for (int i = 0; i < WB_ATTN_BF16_MR; i++) out[i] = P + (size_t)i * Sp + j0;   /* repeats: spare rows */
                wb_attn_bf16_tile(qrow, Kb + j0, (size_t)Sp, d2, out, WB_ATTN_BF16_NV);
            }
        }
        float inv[WB_ATTN_BF16_ROWS];
        for (int i = 0; i < nr; i++) {
            float *pi = P + (size_t)i * Sp;
            uint16_t *pb = (uint16_t *)(Pb + (size_t)i * (Sp / 2));
            const int keep = sig && mask[r0 + i] == 0.0f;
            inv[i] = 1.0f / wb_attn_bf16_softmax_row(pi, mask, S, pb, keep);
            if (keep) for (int j = 0; j < S; j++) sig[j] += pi[j] * inv[i];
            if (amx) for (int j = (S + 15) / 16 * 16; j < 2 * S2p; j++) pb[j] = 0;   /* whole chunks */
        }
        if (amx) {
            memset(Pb + (size_t)nr * (Sp / 2), 0, sizeof(uint32_t) * (size_t)(rows - nr) * (Sp / 2));
            wb_attn_amx_context(Pb, Sp / 2, S2p, Vb, dp, C);
        } else {
            for (int d0 = 0; d0 < dp; d0 += 16 * WB_ATTN_BF16_NV) {
                for (int i = 0; i < WB_ATTN_BF16_MR; i++) out[i] = C + (size_t)i * dp + d0;
                switch ((dp - d0) / 16) {   /* the last columns: constant widths, unrolled */
                    case 1: wb_attn_bf16_tile(prow, Vb + d0, (size_t)dp, S2, out, 1); break;
                    case 2: wb_attn_bf16_tile(prow, Vb + d0, (size_t)dp, S2, out, 2); break;
                    case 3: wb_attn_bf16_tile(prow, Vb + d0, (size_t)dp, S2, out, 3); break;
                    default: wb_attn_bf16_tile(prow, Vb + d0, (size_t)dp, S2, out, WB_ATTN_BF16_NV); break;
                }
            }
        }
        for (int i = 0; i < nr; i++) {
            float *o = a->ctx + (((size_t)b * R + r0 + i) * nh + h) * d;
            const float *c = C + (size_t)i * dp;
            const __m512 vi = _mm512_set1_ps(inv[i]);
            for (int dd = 0; dd < d; dd += 16) {
                const __mmask16 m = d - dd >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (d - dd)) - 1);
                _mm512_mask_storeu_ps(o + dd, m, _mm512_mul_ps(_mm512_loadu_ps(c + dd), vi));
            }
        }
    }
}

#endif
