/* Fused multi-head attention for workbench_ext.attention: for every (batch, head) pair
 *   ctx[b, r, h, :] = softmax(q[b, h, r, :] . k[b, h, :, :] + mask[b, :]) @ v[b, h, :, :]
 * in one call, OpenMP-parallel over the (batch, head) pairs (no Python threads, no NumPy
 * temporaries).  q / k / v are strided views (element strides; the head_dim axis of q and v is
 * contiguous) so the engine passes slices of its fused QKV output as they are.
 *
 * Per pair: the head's K is copied to a contiguous Kt[d][S] (scores vectorise over keys), each
 * query row's scores are accumulated in fp32 (k-order dd = 0..d-1), the additive mask added,
 * softmax as workbench_ext.ops.softmax (same row function, so the same exp), then the
 * probabilities times V accumulated over keys j = 0..S-1 (vectorised over head_dim).  The scale
 * 1/sqrt(d) is expected to be folded into q.  One source, compiled for AVX-512 / AVX2 / portable
 * by target attributes (the loops are auto-vectorised); -ffp-contract=off (C11), so the three
 * paths perform the same float operations except the softmax exp (AVX2 polynomial vs expf).
 */
#ifndef WB_ATTN_H
#define WB_ATTN_H

#include "wb_ops.h"

typedef struct {
    const float *q; long qb, qh, qr;          /* q[b*qb + h*qh + r*qr + dd] */
    const float *k; long kb, kh, kd, ks;      /* k[b*kb + h*kh + dd*kd + j*ks] */
    const float *v; long vb, vh, vs;          /* v[b*vb + h*vh + j*vs + dd] */
    const float *mask;                        /* [B][S] additive */
    float *ctx;                               /* [B][R][nh][d] */
    int B, nh, R, S, d;
    float *sig;                               /* NULL, or [B][nh][S] (R == S): each key's
                                               * probabilities summed over the non-padding
                                               * queries (mask == 0), for token dropping */
} wb_attn_t;

static inline __attribute__((always_inline)) void
wb_attn_pair_body(const wb_attn_t *a, long pair, float *restrict Kt, float *restrict p, int vec_softmax) {
    /* everything in locals: with -fno-strict-aliasing the stores below could alias *a */
    const int nh = a->nh, S = a->S, d = a->d, R = a->R;
    const int b = (int)(pair / nh), h = (int)(pair % nh);
    const long kd = a->kd, ks = a->ks, vs = a->vs, qr = a->qr;
    const float *restrict k = a->k + b * a->kb + h * a->kh;
    const float *restrict mask = a->mask + (size_t)b * S;
    const float *restrict v = a->v + b * a->vb + h * a->vh;
    const float *restrict q0 = a->q + b * a->qb + h * a->qh;
    float *restrict ctx = a->ctx;
    /* this pair's own row of sig: one thread per pair, so no two threads add to it */
    float *restrict sig = a->sig ? a->sig + ((size_t)b * nh + h) * S : NULL;
    if (sig) for (int j = 0; j < S; j++) sig[j] = 0.0f;
    for (int dd = 0; dd < d; dd++)
        for (int j = 0; j < S; j++) Kt[(size_t)dd * S + j] = k[dd * kd + j * ks];
    /* two query rows at a time, keys / head_dim in blocks of 32: the partial sums stay in
     * registers (4 zmm / 8 ymm accumulators); each output is still summed in the plain order */
    float *restrict p1 = p + S + 16;
    for (int r = 0; r < R; r += 2) {
        const int two = r + 1 < R;
        const float *restrict qa = q0 + r * qr, *restrict qb = two ? qa + qr : qa;
        int j0 = 0;
        for (; j0 + 32 <= S; j0 += 32) {
            float s0[32], s1[32];
            for (int jj = 0; jj < 32; jj++) { s0[jj] = 0.0f; s1[jj] = 0.0f; }
            for (int dd = 0; dd < d; dd++) {
                const float x0 = qa[dd], x1 = qb[dd];
                const float *restrict kt = Kt + (size_t)dd * S + j0;
                for (int jj = 0; jj < 32; jj++) { s0[jj] += x0 * kt[jj]; s1[jj] += x1 * kt[jj]; }
            }
            for (int jj = 0; jj < 32; jj++) { p[j0 + jj] = s0[jj] + mask[j0 + jj]; p1[j0 + jj] = s1[jj] + mask[j0 + jj]; }
        }
        for (int j = j0; j < S; j++) {
            float s0 = 0.0f, s1 = 0.0f;
            for (int dd = 0; dd < d; dd++) { s0 += qa[dd] * Kt[(size_t)dd * S + j]; s1 += qb[dd] * Kt[(size_t)dd * S + j]; }
            p[j] = s0 + mask[j];
            p1[j] = s1 + mask[j];
        }
        if (vec_softmax) { wb_softmax_row_avx2(p, S, p); if (two) wb_softmax_row_avx2(p1, S, p1); }
        else { wb_softmax_row(p, S, p); if (two) wb_softmax_row(p1, S, p1); }
        if (sig) {  /* queries in order r, r + 1: the sum NumPy's qmask @ probs also forms */
            if (mask[r] == 0.0f) for (int j = 0; j < S; j++) sig[j] += p[j];
            if (two && mask[r + 1] == 0.0f) for (int j = 0; j < S; j++) sig[j] += p1[j];
        }
        float *restrict ca = ctx + (((size_t)b * R + r) * nh + h) * d;
        float *restrict cb = two ? ctx + (((size_t)b * R + r + 1) * nh + h) * d : NULL;
        int d0 = 0;
        for (; d0 + 32 <= d; d0 += 32) {
            float c0[32], c1[32];
            for (int i = 0; i < 32; i++) { c0[i] = 0.0f; c1[i] = 0.0f; }
            for (int j = 0; j < S; j++) {
                const float pa = p[j], pb = p1[j];
                const float *restrict vj = v + j * vs + d0;
                for (int i = 0; i < 32; i++) { c0[i] += pa * vj[i]; c1[i] += pb * vj[i]; }
            }
            for (int i = 0; i < 32; i++) ca[d0 + i] = c0[i];
            if (two) for (int i = 0; i < 32; i++) cb[d0 + i] = c1[i];
        }
        for (int dd = d0; dd < d; dd++) {
            float c0 = 0.0f, c1 = 0.0f;
            for (int j = 0; j < S; j++) { c0 += p[j] * v[j * vs + dd]; c1 += p1[j] * v[j * vs + dd]; }
            ca[dd] = c0;
            if (two) cb[dd] = c1;
        }
    }
}

WB_AVX512 static void wb_attn_pair_avx512(const wb_attn_t *a, long pair, float *Kt, float *p) {
    wb_attn_pair_body(a, pair, Kt, p, 1);
}
WB_AVX2 static void wb_attn_pair_avx2(const wb_attn_t *a, long pair, float *Kt, float *p) {
    wb_attn_pair_body(a, pair, Kt, p, 1);
}
static void wb_attn_pair_portable(const wb_attn_t *a, long pair, float *Kt, float *p) {
    wb_attn_pair_body(a, pair, Kt, p, 0);
}

/* Returns 0, or -1 if scratch memory could not be allocated. */
static int wb_attention(const wb_attn_t *a, int isa, int nt) {
    const long pairs = (long)a->B * a->nh;
    nt = wb_threads(nt);
    if (nt > pairs) nt = (int)(pairs > 0 ? pairs : 1);
    const long work = (long)a->R * a->S * a->d * pairs;
    int failed = 0;
    #pragma omp parallel num_threads(nt) if (nt > 1 && work > 65536) reduction(|:failed)
    {
        float *Kt = (float *)malloc(sizeof(float) * ((size_t)a->d * a->S + 2 * (size_t)a->S + 32));
        float *p = Kt ? Kt + (size_t)a->d * a->S : NULL;
        #pragma omp for schedule(static)
        for (long t = 0; t < pairs; t++) {     /* every thread meets the worksharing loop */
            if (!Kt) { failed = 1; continue; }
            if (isa >= WB_ISA_AVX512_VNNI) wb_attn_pair_avx512(a, t, Kt, p);
            else if (isa >= WB_ISA_AVX2) wb_attn_pair_avx2(a, t, Kt, p);
            else wb_attn_pair_portable(a, t, Kt, p);
        }
        free(Kt);
    }
    return failed ? -1 : 0;
}

#endif
