/* Fused multi-head attention for workbench_ext.attention: for every (batch, head) pair
 *   ctx[b, r, h, :] = softmax(q[b, h, r, :] . k[b, h, :, :] + mask[b, :]) @ v[b, h, :, :]
 * in one call, parallel over the (batch, head) pairs on the kernels' pool (wb_pool.h; no
 * Python threads, no NumPy temporaries).  q / k / v are strided views (element strides; the
 * head_dim axis of q and v is contiguous) so the engine passes slices of its fused QKV output
 * as they are.
 *
 * Per pair on AVX-512 and AVX2: K is transposed into Kt[d][Sp] and V packed into Vp[S][dp], then
 * query rows in tiles of 4 (wb_attn_simd.h, register-blocked): scores as one FMA chain per
 * output over head_dim dd = 0..d-1, plus the additive mask, softmax (ops' AVX2 row function),
 * context as one FMA chain per output over keys j = 0..S-1. Both widths run the same chains, so
 * their results are bit-identical. With a->precision WB_ATTN_BF16, CPUs with AVX512-BF16 run
 * each pair on bf16 operands instead (wb_attn_bf16.h: twice the multiply-adds per instruction,
 * ~2^-9 relative rounding per operand); with WB_ATTN_INT8, CPUs with AVX-512 VNNI run it on int8
 * operands (wb_attn_int8.h: four times the multiply-adds per instruction, q, k, v and the
 * weights on int8 grids). The portable body (plain loops, -ffp-contract=off: separate
 * multiply and add, expf) agrees with them to float rounding. The scale 1/sqrt(d) is expected
 * to be folded into q.
 */
#ifndef WB_ATTN_H
#define WB_ATTN_H

#include <stdatomic.h>
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
    int precision;                            /* WB_ATTN_FP32; WB_ATTN_BF16: bf16 operands on
                                               * AVX512-BF16 or AMX-BF16 (wb_attn_bf16.h,
                                               * wb_attn_bf16_usable); WB_ATTN_INT8: int8
                                               * operands on AVX-512 VNNI (wb_attn_int8.h,
                                               * wb_attn_int8_usable); where the CPU lacks
                                               * them, the fp32 kernels */
    const int *seq_off;                       /* NULL, or packed sequences (no padding): B + 1
                                               * offsets, sequence b's tokens are the rows
                                               * seq_off[b] .. seq_off[b+1]-1 of q, k and v
                                               * (row strides qr, ks, vs; qb, kb, vb unused),
                                               * S is the longest, mask holds S zeros, ctx
                                               * rows are packed the same way (R == S) or one
                                               * per sequence (R == 1), and sig (R == S) holds
                                               * sequence b's [nh][its length] block at
                                               * nh * seq_off[b] */
} wb_attn_t;

#define WB_ATTN_FP32 0
#define WB_ATTN_BF16 1
#define WB_ATTN_INT8 2

static inline __attribute__((always_inline)) void
wb_attn_pair_body(const wb_attn_t *a, long pair, float *restrict Kt, float *restrict p) {
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
        wb_softmax_row(p, S, p);
        if (two) wb_softmax_row(p1, S, p1);
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

/* the register-blocked pair kernels (wb_attn_simd.h): keys padded to Sp, head_dim to dp */
#define WB_ATTN_MR_MAX 6   /* the largest WB_AT_MR below: the P and C scratch rows */
static inline long wb_attn_sp(int S) { return ((long)S + 63) / 64 * 64; }
static inline int wb_attn_dp(int d) { return (d + 15) / 16 * 16; }
#include "wb_attn_bf16.h"   /* the bf16 pair kernel; its scratch is counted below */
#include "wb_attn_int8.h"   /* the int8 pair kernel; likewise */
static inline size_t wb_attn_scratch_floats(int S, int d) {
    const size_t Sp = (size_t)wb_attn_sp(S), dp = (size_t)wb_attn_dp(d);
    size_t blocked = (size_t)d * Sp + (size_t)S * dp + WB_ATTN_MR_MAX * (Sp + dp);
    size_t plain = (size_t)d * S + 2 * (size_t)S + 32;   /* the portable body's Kt + p */
    size_t bf16 = wb_attn_bf16_scratch_words((long)Sp, S, (int)dp, d);
    if (bf16 > blocked) blocked = bf16;
    size_t int8 = wb_attn_i8_scratch_words((long)Sp, S, (int)dp, d);
    if (int8 > blocked) blocked = int8;
    return blocked > plain ? blocked : plain;
}

/* Kt[dd][j] = k[dd * kd + j * ks] for the keys j0.. of every dd and the keys ..j0 of the dd
 * from dd0 on: the edges the SIMD transpose (wb_attn_kt in wb_attn_simd.h) leaves, or all of
 * it (j0 = dd0 = 0). */
static inline void wb_attn_kt_scalar(const float *k, long kd, long ks, int S, int d, long Sp, float *Kt,
                                     int j0, int dd0) {
    for (int j = j0; j < S; j++)
        for (int dd = 0; dd < d; dd++) Kt[(size_t)dd * Sp + j] = k[dd * kd + j * ks];
    for (int j = 0; j < j0; j++)
        for (int dd = dd0; dd < d; dd++) Kt[(size_t)dd * Sp + j] = k[dd * kd + j * ks];
}

#define WB_AT_T WB_AVX512
#define WB_AT_SUF avx512
#define WB_AT_V __m512
#define WB_AT_W 16
#define WB_AT_LOAD _mm512_loadu_ps
#define WB_AT_STORE _mm512_storeu_ps
#define WB_AT_FMA _mm512_fmadd_ps
#define WB_AT_SET1 _mm512_set1_ps
#define WB_AT_ZERO _mm512_setzero_ps
/* AVX-512 query rows per tile: 6 x 4 vectors = 24 accumulators (+ 4 loads + 1 broadcast = 29
 * zmm), 24 FMAs per 4 loads and 6 broadcasts where 4 rows gave 16 per 4 and 4. Zen 5, builds
 * taking turns (results/bench/zen5-attention-mr/): 12 heads x 64 at 128 tokens 1.01x on one
 * thread, 1.06x (batch 1) and 1.03x (batch 8) on two; 12 heads x 32 unchanged (0.99-1.00x).
 * Each output is still one FMA chain in the plain order: the same bits at any tile height. */
#define WB_AT_MR 6
#define WB_AT_NC 4
#define WB_AT_NV 4
#define WB_AT_SOFTMAX wb_softmax_row_avx512
#define WB_AT_TRANSPOSE wb_transpose16
#include "wb_attn_simd.h"

#define WB_AT_T WB_AVX2
#define WB_AT_SUF avx2
#define WB_AT_V __m256
#define WB_AT_W 8
#define WB_AT_LOAD _mm256_loadu_ps
#define WB_AT_STORE _mm256_storeu_ps
#define WB_AT_FMA _mm256_fmadd_ps
#define WB_AT_SET1 _mm256_set1_ps
#define WB_AT_ZERO _mm256_setzero_ps
/* 6 query rows x 2 vectors: 12 accumulator chains (+ 2 loads + 1 broadcast = 15 ymm) hide the
 * 4-cycle FMA latency behind two FMAs a cycle, where 4 x 2 gave exactly 8.  Zen 3, 2026-12-04,
 * B x 12 heads x 128 x 64: B = 8 on one thread 5.96-6.57 ms against 6.98 (min of 40); B = 1
 * on two threads 0.375 against 0.452 ms (min of 200). */
#define WB_AT_MR 6
#define WB_AT_NC 2
#define WB_AT_NV 2
#define WB_AT_SOFTMAX wb_softmax_row_avx2
#define WB_AT_TRANSPOSE wb_transpose8
#include "wb_attn_simd.h"

/* Where bf16 attention runs at this ISA: 2 on AMX tiles (AMX-BF16 and the "amx" path, whose
 * check covered the OS state and the tile permission), 1 on AVX512-BF16 (an AVX-512 path),
 * 0 nowhere (the fp32 kernels run). */
static int wb_attn_bf16_usable(int isa) {
    static _Atomic int has = -1;   /* CPUID traps to the hypervisor on a VM: asked once */
    int h = atomic_load(&has);
    if (h < 0) { h = wb_cpu_has_avx512_bf16() | (wb_cpu_has_amx_bf16() << 1); atomic_store(&has, h); }
    if (!(h & 1) || isa < WB_ISA_AVX512_VNNI) return 0;
    return (h & 2) && isa >= WB_ISA_AMX ? 2 : 1;
}

/* Whether int8 attention runs at this ISA (AVX-512 VNNI, and so every AMX CPU): 1, else 0 (the
 * fp32 kernels run). */
static int wb_attn_int8_usable(int isa) {
    return isa >= WB_ISA_AVX512_VNNI;
}

static void wb_attn_pair_portable(const wb_attn_t *a, long pair, float *Kt, float *p) {
    wb_attn_pair_body(a, pair, Kt, p);
}

/* bf16: 0, or where bf16 runs (wb_attn_bf16_usable); int8: whether int8 runs */
typedef struct { const wb_attn_t *a; int isa, bf16, int8; _Atomic int failed; } wb_attn_job_t;

/* Packed sequences (a->seq_off): pair t's sequence as a batch of one, with its own length, in
 * *one -- the pair kernels then run it exactly as they run that sequence alone. */
static inline const wb_attn_t *wb_attn_packed_pair(const wb_attn_t *a, long t, wb_attn_t *one) {
    const int b = (int)(t / a->nh), o = a->seq_off[b];
    *one = *a;
    one->seq_off = NULL;
    one->B = 1;
    one->S = a->seq_off[b + 1] - o;
    one->R = a->R == 1 ? 1 : one->S;
    one->q = a->q + (long)o * a->qr;
    one->k = a->k + (long)o * a->ks;
    one->v = a->v + (long)o * a->vs;
    one->ctx = a->ctx + (size_t)(a->R == 1 ? b : o) * a->nh * a->d;
    one->sig = a->sig ? a->sig + (size_t)o * a->nh : NULL;
    return one;
}

/* one (sequence, head) pair after another: dynamic chunks of one, so a thread the shared
 * machine slows down takes fewer heads */
static void wb_attn_chunk(void *p, long b, long e) {
    wb_attn_job_t *j = (wb_attn_job_t *)p;
    const wb_attn_t *a = j->a;
    float *Kt = (float *)wb_thread_scratch(sizeof(float) * wb_attn_scratch_floats(a->S, a->d));
    if (!Kt) { atomic_store(&j->failed, 1); return; }
    float *pr = Kt + (size_t)a->d * a->S;   /* the portable body's layout */
    if (j->bf16 == 2) wb_attn_amx_begin();   /* tile configuration: per thread */
    for (long t = b; t < e; t++) {
        wb_attn_t one;
        const wb_attn_t *s = a->seq_off ? wb_attn_packed_pair(a, t, &one) : a;
        const long u = a->seq_off ? t % a->nh : t;   /* the pair's index in *s */
        if (j->int8) wb_attn_pair_int8(s, u, Kt);
        else if (j->bf16) wb_attn_pair_bf16(s, u, Kt, j->bf16 == 2);
        else if (j->isa >= WB_ISA_AVX512_VNNI) wb_attn_pair_avx512(s, u, Kt);
        else if (j->isa >= WB_ISA_AVX2) wb_attn_pair_avx2(s, u, Kt);
        else wb_attn_pair_portable(s, u, Kt, pr);
    }
    if (j->bf16 == 2) wb_attn_amx_end();
}

/* Returns 0, or -1 if scratch memory could not be allocated. */
static int wb_attention(const wb_attn_t *a, int isa, int nt) {
    const long pairs = (long)a->B * a->nh;
    nt = wb_threads(nt);
    const long work = (long)a->R * a->S * a->d * pairs;
    wb_attn_job_t job = {a, isa, a->precision == WB_ATTN_BF16 ? wb_attn_bf16_usable(isa) : 0,
                         a->precision == WB_ATTN_INT8 && wb_attn_int8_usable(isa), 0};
    wb_parallel_for(work > 65536 ? nt : 1, pairs, 1, wb_attn_chunk, &job);
    return atomic_load(&job.failed) ? -1 : 0;
}

#endif
