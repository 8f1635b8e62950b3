/* One (batch, head) pair of fused attention, register-blocked, for one SIMD width.
 *
 * A "template": wb_attn.h includes this file once per ISA after defining
 *   WB_AT_T      the function target attribute          WB_AT_SUF  name suffix (avx512 / avx2)
 *   WB_AT_V      the vector type (__m512 / __m256)       WB_AT_W    its float lanes (16 / 8)
 *   WB_AT_LOAD / WB_AT_STORE / WB_AT_FMA / WB_AT_SET1 / WB_AT_ZERO   the intrinsics
 *   WB_AT_MR     query rows per tile                     WB_AT_NC   vectors of keys per score tile
 *   WB_AT_NV     at most this many vectors of head_dim per PV tile
 *   WB_AT_SOFTMAX  the softmax row function (wb_ops.h; both give the same bits)
 *   WB_AT_TRANSPOSE  the W x W register transpose (wb_common.h)
 * (this file undefines them at its end, ready for the next instance).
 *
 * Why blocked: the plain loops did 2 query rows x 32 keys per step (4 FMAs per 2 loads and 2
 * broadcasts) and ran at ~70 GFLOP/s on 2 Zen 5 cores -- 30 % of a DistilBERT forward. A tile of
 * MR rows x NC vectors keeps MR * NC accumulators in registers: MR * NC FMAs per NC loads and MR
 * broadcasts. Every output is still one FMA chain in the plain order (scores over head_dim
 * dd = 0..d-1, context over keys j = 0..S-1), so both widths give bit-identical results.
 *
 * Scratch (floats): Kt [d][Sp] (K transposed, keys zero-padded to whole vectors; Sp, its row
 * length, a multiple of 64),
 * Vp [S][dp] (V rows packed, head_dim zero-padded to dp, a multiple of 16), P [MR][Sp] (scores,
 * then probabilities), C [MR][dp] (context rows before they are copied out).
 */
#define WB_AT_CAT2(a, b) a##_##b
#define WB_AT_CAT(a, b) WB_AT_CAT2(a, b)
#define WB_AT_FN(name) WB_AT_CAT(name, WB_AT_SUF)

/* Kt[dd][j] = k[dd * kd + j * ks] for j < S (columns S..Sp-1 are set by the caller). With
 * head_dim contiguous in k (kd == 1, the engine's fused QKV rows) W x W blocks go through
 * register transposes; the scalar loop was a tenth of the attention kernel's time. */
WB_AT_T static void WB_AT_FN(wb_attn_kt)(const float *k, long kd, long ks, int S, int d, long Sp, float *Kt) {
    if (kd != 1) { wb_attn_kt_scalar(k, kd, ks, S, d, Sp, Kt, 0, 0); return; }
    const int Sw = S / WB_AT_W * WB_AT_W, dw = d / WB_AT_W * WB_AT_W;
    for (int j0 = 0; j0 < Sw; j0 += WB_AT_W)
        for (int dd0 = 0; dd0 < dw; dd0 += WB_AT_W) {
            WB_AT_V R[WB_AT_W];
            for (int i = 0; i < WB_AT_W; i++) R[i] = WB_AT_LOAD(k + (j0 + i) * ks + dd0);
            WB_AT_TRANSPOSE(R);
            for (int i = 0; i < WB_AT_W; i++) WB_AT_STORE(Kt + (size_t)(dd0 + i) * Sp + j0, R[i]);
        }
    wb_attn_kt_scalar(k, kd, ks, S, d, Sp, Kt, Sw, dw);
}

WB_AT_T static inline __attribute__((always_inline)) void
WB_AT_FN(wb_attn_score_tile)(const float *const *q, const float *restrict Kt, long Sp, int j0, int d,
                             float *const *p, const int nc) {
    WB_AT_V acc[WB_AT_MR][WB_AT_NC];
    for (int i = 0; i < WB_AT_MR; i++)
        for (int c = 0; c < nc; c++) acc[i][c] = WB_AT_ZERO();
    for (int dd = 0; dd < d; dd++) {
        const float *kt = Kt + (size_t)dd * Sp + j0;
        WB_AT_V k[WB_AT_NC];
        for (int c = 0; c < nc; c++) k[c] = WB_AT_LOAD(kt + c * WB_AT_W);
        for (int i = 0; i < WB_AT_MR; i++) {
            const WB_AT_V b = WB_AT_SET1(q[i][dd]);
            for (int c = 0; c < nc; c++) acc[i][c] = WB_AT_FMA(b, k[c], acc[i][c]);
        }
    }
    for (int i = 0; i < WB_AT_MR; i++)
        for (int c = 0; c < nc; c++) WB_AT_STORE(p[i] + j0 + c * WB_AT_W, acc[i][c]);
}

WB_AT_T static inline __attribute__((always_inline)) void
WB_AT_FN(wb_attn_pv_tile)(const float *const *p, const float *restrict Vp, int dp, int S, int d0,
                          float *restrict C, const int nv) {
    WB_AT_V acc[WB_AT_MR][WB_AT_NV];
    for (int i = 0; i < WB_AT_MR; i++)
        for (int c = 0; c < nv; c++) acc[i][c] = WB_AT_ZERO();
    for (int j = 0; j < S; j++) {
        const float *vj = Vp + (size_t)j * dp + d0;
        WB_AT_V v[WB_AT_NV];
        for (int c = 0; c < nv; c++) v[c] = WB_AT_LOAD(vj + c * WB_AT_W);
        for (int i = 0; i < WB_AT_MR; i++) {
            const WB_AT_V b = WB_AT_SET1(p[i][j]);
            for (int c = 0; c < nv; c++) acc[i][c] = WB_AT_FMA(b, v[c], acc[i][c]);
        }
    }
    for (int i = 0; i < WB_AT_MR; i++)
        for (int c = 0; c < nv; c++) WB_AT_STORE(C + (size_t)i * dp + d0 + c * WB_AT_W, acc[i][c]);
}

WB_AT_T static void WB_AT_FN(wb_attn_pair)(const wb_attn_t *a, long pair, float *scratch) {
    const int nh = a->nh, S = a->S, d = a->d, R = a->R;
    const int b = (int)(pair / nh), h = (int)(pair % nh);
    const long kd = a->kd, ks = a->ks, vs = a->vs, qr = a->qr;
    const long Sp = wb_attn_sp(S);
    const int dp = wb_attn_dp(d);
    const float *k = a->k + b * a->kb + h * a->kh;
    const float *mask = a->mask + (size_t)b * S;
    const float *v = a->v + b * a->vb + h * a->vh;
    const float *q0 = a->q + b * a->qb + h * a->qh;
    float *Kt = scratch, *Vp = Kt + (size_t)d * Sp, *P = Vp + (size_t)S * dp, *C = P + (size_t)WB_ATTN_MR_MAX * Sp;
    float *sig = a->sig ? a->sig + ((size_t)b * nh + h) * S : NULL;
    if (sig) for (int j = 0; j < S; j++) sig[j] = 0.0f;
    WB_AT_FN(wb_attn_kt)(k, kd, ks, S, d, Sp, Kt);
    for (int j = 0; j < S; j++) {
        memcpy(Vp + (size_t)j * dp, v + j * vs, sizeof(float) * d);
        for (int dd = d; dd < dp; dd++) Vp[(size_t)j * dp + dd] = 0.0f;
    }
    /* Scores are computed for the key vectors that hold the S keys, SV of them: a short input
     * no longer pays for all of Sp (a multiple of 64: at 26 keys, 64 scores a row, 2.5x the
     * work). Each score is the same FMA chain whatever the tile's width: the same bits. */
    const int SV = (S + WB_AT_W - 1) / WB_AT_W;
    for (int dd = 0; dd < d; dd++)
        for (long j = S; j < (long)SV * WB_AT_W; j++) Kt[(size_t)dd * Sp + j] = 0.0f;
    const int KT = WB_AT_NC * WB_AT_W;   /* keys per full score tile */
    for (int r0 = 0; r0 < R; r0 += WB_AT_MR) {
        const int nr = R - r0 < WB_AT_MR ? R - r0 : WB_AT_MR;
        const float *qrow[WB_AT_MR];
        float *prow[WB_AT_MR];
        for (int i = 0; i < WB_AT_MR; i++) {   /* a short last tile repeats its last row */
            const int ii = i < nr ? i : nr - 1;
            qrow[i] = q0 + (r0 + ii) * qr;
            prow[i] = P + (size_t)ii * Sp;
        }
        float *pw[WB_AT_MR];                   /* tile rows written: repeated rows to a spare row */
        for (int i = 0; i < WB_AT_MR; i++) pw[i] = P + (size_t)i * Sp;
        int j0 = 0;
        for (; j0 + KT <= SV * WB_AT_W; j0 += KT) WB_AT_FN(wb_attn_score_tile)(qrow, Kt, Sp, j0, d, pw, WB_AT_NC);
        switch (SV - j0 / WB_AT_W) {           /* the last key vectors: constant widths, unrolled */
            case 1: WB_AT_FN(wb_attn_score_tile)(qrow, Kt, Sp, j0, d, pw, 1); break;
#if WB_AT_NC > 2
            case 2: WB_AT_FN(wb_attn_score_tile)(qrow, Kt, Sp, j0, d, pw, 2); break;
#endif
#if WB_AT_NC > 3
            case 3: WB_AT_FN(wb_attn_score_tile)(qrow, Kt, Sp, j0, d, pw, 3); break;
#endif
            default: break;
        }
        for (int i = 0; i < nr; i++) {
            float *pi = P + (size_t)i * Sp;
            for (int j = 0; j < S; j++) pi[j] = pi[j] + mask[j];
            WB_AT_SOFTMAX(pi, S, pi);
            if (sig && mask[r0 + i] == 0.0f) for (int j = 0; j < S; j++) sig[j] += pi[j];
        }
        const float *pr[WB_AT_MR];
        for (int i = 0; i < WB_AT_MR; i++) pr[i] = prow[i];
        int d0 = 0;
        for (; d0 + WB_AT_NV * WB_AT_W <= dp; d0 += WB_AT_NV * WB_AT_W)
            WB_AT_FN(wb_attn_pv_tile)(pr, Vp, dp, S, d0, C, WB_AT_NV);
        switch ((dp - d0) / WB_AT_W) {         /* the rest of head_dim: constant widths, unrolled */
            case 1: WB_AT_FN(wb_attn_pv_tile)(pr, Vp, dp, S, d0, C, 1); break;
#if WB_AT_NV > 2
            case 2: WB_AT_FN(wb_attn_pv_tile)(pr, Vp, dp, S, d0, C, 2); break;
#endif
#if WB_AT_NV > 3
            case 3: WB_AT_FN(wb_attn_pv_tile)(pr, Vp, dp, S, d0, C, 3); break;
#endif
            default: break;
        }
        for (int i = 0; i < nr; i++)
            memcpy(a->ctx + (((size_t)b * R + r0 + i) * nh + h) * d, C + (size_t)i * dp, sizeof(float) * d);
    }
}

#undef WB_AT_FN
#undef WB_AT_CAT
#undef WB_AT_CAT2
#undef WB_AT_T
#undef WB_AT_SUF
#undef WB_AT_V
#undef WB_AT_W
#undef WB_AT_LOAD
#undef WB_AT_STORE
#undef WB_AT_FMA
#undef WB_AT_SET1
#undef WB_AT_ZERO
#undef WB_AT_MR
#undef WB_AT_NC
#undef WB_AT_NV
#undef WB_AT_SOFTMAX
#undef WB_AT_TRANSPOSE
