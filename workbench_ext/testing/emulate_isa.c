/* Logic test of the AVX-512 VNNI and AMX int8 kernels, of the AMX-BF16 products of the bf16
 * attention (wb_attn_amx.h) and of the VNNI products of the int8 attention (wb_attn_int8_tile.h),
 * on machines without those ISAs.
 *
 * The kernels in wb_int8.h (and the wb_int8_*.h files it includes) are compiled here against scalar emulations of exactly the
 * intrinsics they use (_mm512_* for VNNI, _tile_* for AMX, following the Intel SDM
 * pseudo-code, including the tile configuration's rows / colsb), then checked for exact
 * equality against a plain int64 reference on odd shapes.  This validates packing layouts,
 * indexing, tiling, padding and the epilogue -- NOT the real instructions' encoding or speed.
 * Run by tests/test_kernels.py (gcc -O1 -fopenmp ... && ./a.out); prints "OK" on success.
 */
#define _GNU_SOURCE   /* sched_getcpu and the CPU-set calls of wb_pool_impl.h */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>

/* ---- AVX-512 emulation (only what the kernels use) ---- */
typedef struct { int32_t i[16]; } emu512;
static emu512 emu_setzero(void) { emu512 r; memset(&r, 0, sizeof r); return r; }
static emu512 emu_loadu(const void *p) { emu512 r; memcpy(&r, p, 64); return r; }
static void emu_storeu(void *p, emu512 v) { memcpy(p, &v, 64); }
static emu512 emu_set1(int32_t x) { emu512 r; for (int l = 0; l < 16; l++) r.i[l] = x; return r; }
static emu512 emu_add(emu512 a, emu512 b) { for (int l = 0; l < 16; l++) a.i[l] += b.i[l]; return a; }
static emu512 emu_dpbusd(emu512 src, emu512 a, emu512 b) {
    const uint8_t *ua = (const uint8_t *)a.i;
    const int8_t *sb = (const int8_t *)b.i;
    for (int l = 0; l < 16; l++)
        for (int t = 0; t < 4; t++) src.i[l] += (int32_t)ua[4 * l + t] * (int32_t)sb[4 * l + t];
    return src;
}
#define __m512i emu512
#define _mm512_setzero_si512 emu_setzero
#define _mm512_loadu_si512 emu_loadu
#define _mm512_storeu_si512 emu_storeu
#define _mm512_set1_epi32 emu_set1
#define _mm512_add_epi32 emu_add
#define _mm512_dpbusd_epi32 emu_dpbusd

#include "emu_amx.h"

#define WB_AVX512
#define WB_EMULATE_ISA 1
#include "wb_int8.h"
#include "wb_attn_amx.h"
#include "wb_attn_int8_tile.h"
#include "wb_tile_sparse.h"
#include "wb_pool_impl.h"   /* the parallel loops run on the real pool: chunks on 2 threads */

static uint32_t rng_state = 12345;
static uint32_t rnd(void) { rng_state = rng_state * 1664525u + 1013904223u; return rng_state >> 8; }

/* Random u8 rows xq[M][Kp] and zero points for weights w[N][K]; wsum and the exact int32
 * reference sum_k (xq - zp) * w. */
static void random_rows_and_reference(const int8_t *w, int M, int K, int N, int Kp, uint8_t *xq,
                                      int32_t *zp, int32_t *wsum, int32_t *ref) {
    for (int m = 0; m < M; m++) {
        zp[m] = (int32_t)(rnd() % 256);
        for (int k = 0; k < K; k++) xq[(size_t)m * Kp + k] = (uint8_t)(rnd() % 256);
    }
    wb_wsum(w, N, K, wsum);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            long long s = 0;
            for (int k = 0; k < K; k++) s += (long long)((int)xq[(size_t)m * Kp + k] - zp[m]) * w[(size_t)n * K + k];
            ref[(size_t)m * N + n] = (int32_t)s;
        }
}

/* The dense AMX kernel with one of its workers (pipelined or plain) and item orders (grouped 2
 * panel pairs at a time, so small cases get several ragged groups), then the defaults back. */
static void dense_amx_variant(int pipelined, int grouped, const uint8_t *xq, int M, int Kp,
                              const int8_t *bp, int N, const wb_epi_t *e, int nt) {
    wb_amx_pipelined = pipelined;
    wb_amx_order = grouped;
    wb_amx_group_pairs = grouped ? 2 : 0;
    wb_dense_amx(xq, M, Kp, bp, N, e, nt);
    wb_amx_pipelined = 1;
    wb_amx_order = 0;
    wb_amx_group_pairs = 0;
}

/* The same with every operand tuning (wb_amx_tuning: A in tile order or not, prefetch distances,
 * where the next pair's B goes): each must give the reference too.  Returns 1 on a mismatch. */
static int dense_amx_tunings(const uint8_t *xq, int M, int Kp, const int8_t *bp, int N, wb_epi_t *e,
                             int nt, const int32_t *ref, int32_t *out) {
    static const wb_amx_tuning_t tunings[] = {{1, 2, 0, 1}, {0, 0, 0, 0}, {0, 4, 2, 2}, {1, 3, 1, 3}, {1, 0, 3, 2}};
    const wb_amx_tuning_t saved = wb_amx_tuning;
    int bad = 0;
    for (int i = 0; i < (int)(sizeof tunings / sizeof tunings[0]); i++)
        for (int v = 0; v < 4; v++) {   /* pipelined / plain, panel-pair-major / grouped */
            wb_amx_tuning = tunings[i];
            memset(out, 0x55, (size_t)M * N * 4);
            dense_amx_variant(v < 2, v & 1, xq, M, Kp, bp, N, e, nt);
            wb_amx_tuning = saved;
            if (memcmp(out, ref, (size_t)M * N * 4)) {
                fprintf(stderr, "dense_amx tuning {%d,%d,%d,%d} %s %s M=%d Kp=%d N=%d nt=%d col_segments=%d: mismatch\n",
                        tunings[i].a_packed, tunings[i].a_ahead, tunings[i].b_ahead, tunings[i].b_next, v < 2 ? "pipelined" : "plain",
                        v & 1 ? "grouped" : "pair-major", M, Kp, N, nt, e->col_segments);
                bad = 1;
            }
        }
    return bad;
}

static int run_case(int M, int K, int N, int sparse_pct, int nt) {
    const int Kp = (K + 63) / 64 * 64, Mp = (M + 15) / 16 * 16, Kb = (K + 3) / 4;
    int8_t *w = calloc((size_t)N * K, 1);
    uint8_t *xq = calloc((size_t)Mp * Kp, 1);
    int32_t *zp = calloc(M, 4), *wsum = calloc(N, 4), *ref = calloc((size_t)M * N, 4), *out = calloc((size_t)M * N, 4);
    float *ones = malloc(sizeof(float) * (M > N ? M : N)), *zeros = calloc(N, sizeof(float));
    for (int i = 0; i < (M > N ? M : N); i++) ones[i] = 1.0f;
    for (int n = 0; n < N; n++)
        for (int kb = 0; kb < Kb; kb++) {
            int keep = (int)(rnd() % 100) >= sparse_pct && !(n % 5 == 3);   /* some empty rows */
            for (int t = 0; t < 4 && 4 * kb + t < K; t++) w[(size_t)n * K + 4 * kb + t] = keep ? (int8_t)(rnd() % 256 - 128) : 0;
        }
    random_rows_and_reference(w, M, K, N, Kp, xq, zp, wsum, ref);
    wb_epi_t e = {N, wsum, ones, zeros, zp, ones, NULL, out};
    int bad = 0;
    /* dense VNNI + AMX share the packing (even number of 16-column panels) */
    const int NP = (N + 31) / 32 * 2;
    int8_t *bp = calloc((size_t)NP * Kp * 16, 1);
    wb_pack_dense_vnni(w, N, K, Kp, bp);
    const char *names[6] = {"dense_vnni", "dense_amx", "dense_amx_plain", "sparse_vnni",
                            "dense_amx_grouped", "dense_amx_plain_grouped"};
    /* each path in its own order of work items, then with the columns outermost in 3
     * interleaved segments (wb_epi_item: the fused QKV at batch 1) */
    for (int cs = 0; cs <= 3; cs += 3)
    for (int path = 0; path < 6; path++) {
        e.col_segments = cs;
        memset(out, 0x55, (size_t)M * N * 4);
        if (path == 0) wb_dense_vnni(xq, M, Kp, bp, N, &e, nt);
        else if (path != 3) {   /* the pipelined worker (default), then the plain one; each in
                                 * panel-pair-major order, then grouped 2 pairs at a time */
            dense_amx_variant(path == 1 || path == 4, path >= 4, xq, M, Kp, bp, N, &e, nt);
        } else {
            /* CSR of non-zero 1x4 blocks, as int8.pyx builds it */
            int32_t *rp = calloc(N + 1, 4), *col = malloc(4 * (size_t)N * Kb + 4);
            int8_t *vals = malloc(4 * (size_t)N * Kb + 4);
            int nnz = 0;
            for (int n = 0; n < N; n++) {
                for (int kb = 0; kb < Kb; kb++) {
                    int8_t v[4] = {0, 0, 0, 0};
                    int any = 0;
                    for (int t = 0; t < 4 && 4 * kb + t < K; t++) { v[t] = w[(size_t)n * K + 4 * kb + t]; any |= v[t] != 0; }
                    if (any) { col[nnz] = kb; memcpy(vals + 4 * nnz, v, 4); nnz++; }
                }
                rp[n + 1] = nnz;
            }
            /* 16 * G-row tiles, G = 1..4 (G = 1 through the old entry points); every G must
             * give the reference, so each is checked before the shared comparison below */
            for (int G = 4; G >= 1; G--) {
                const int MB = (M + 16 * G - 1) / (16 * G);
                uint8_t *xt = malloc((size_t)MB * Kb * 64 * G + 1);
                memset(out, 0x55, (size_t)M * N * 4);
                if (G == 1) {
                    wb_pack_x_sparse_u8(xq, M, Kp, Kb, xt, nt);
                    wb_sparse_vnni(xt, M, Kb, rp, col, vals, N, &e, nt);
                } else {
                    wb_pack_x_sparse_u8_g(xq, M, Kp, Kb, G, xt, nt);
                    wb_sparse_vnni_g(xt, M, Kb, G, rp, col, vals, N, &e, nt);
                }
                free(xt);
                if (G > 1 && memcmp(out, ref, (size_t)M * N * 4)) {
                    fprintf(stderr, "sparse_vnni G=%d M=%d K=%d N=%d sp=%d nt=%d col_segments=%d: mismatch\n", G, M, K, N,
                            sparse_pct, nt, cs);
                    bad = 1;
                }
            }
            free(rp); free(col); free(vals);
        }
        for (size_t i = 0; i < (size_t)M * N; i++)
            if (out[i] != ref[i]) {
                fprintf(stderr, "%s M=%d K=%d N=%d sp=%d nt=%d col_segments=%d: mismatch at m=%zu n=%zu: %d != %d\n",
                        names[path], M, K, N, sparse_pct, nt, cs, i / N, i % N, out[i], ref[i]);
                bad = 1;
                break;
            }
    }
    for (int cs = 0; cs <= 3; cs += 3) {
        e.col_segments = cs;
        bad |= dense_amx_tunings(xq, M, Kp, bp, N, &e, nt, ref, out);
    }
    e.col_segments = 0;
    /* the timing probe (wb_amx_probe, outputs wrong by design) does what it says: 1 writes no
     * output, 3 multiplies nothing (the epilogue of zero sums: -zp * wsum), 2 runs the
     * TDPBUSDs on tiles it never loads (any values), 4 writes its outputs to its own scratch,
     * never to the output; none leaves the tile shapes wrong */
    for (int probe = 1; probe <= 4; probe++) {
        memset(out, 0x55, (size_t)M * N * 4);
        wb_amx_probe = probe;
        wb_dense_amx(xq, M, Kp, bp, N, &e, nt);
        wb_amx_probe = 0;
        for (size_t i = 0; i < (size_t)M * N && probe != 2; i++) {
            const int32_t want = probe == 1 || probe == 4 ? 0x55555555 : -zp[i / N] * wsum[i % N];
            if (out[i] != want) {
                fprintf(stderr, "amx probe %d M=%d K=%d N=%d nt=%d: m=%zu n=%zu is %d, not %d\n", probe, M, K, N,
                        nt, i / N, i % N, out[i], want);
                bad = 1;
                break;
            }
        }
    }
    /* float outputs with the fused GELU: both AMX workers (the pipelined one runs the epilogue
     * and activation a few rows at a time) give the VNNI kernel's bits */
    {
        float *xs = malloc(sizeof(float) * M), *wsc = malloc(sizeof(float) * N), *bias = malloc(sizeof(float) * N);
        float *y[5];
        for (int m = 0; m < M; m++) xs[m] = 0.001f * (float)(1 + m % 7);
        for (int n = 0; n < N; n++) { wsc[n] = 0.002f * (float)(1 + n % 5); bias[n] = 0.1f * (float)(n % 3) - 0.1f; }
        wb_epi_t ef = {N, wsum, wsc, bias, zp, xs, NULL, NULL, WB_ACT_GELU_PORTABLE};
        /* v: 0 VNNI; 1, 2 the pipelined and plain AMX workers; 3, 4 the same, grouped order */
        for (int v = 0; v < 5; v++) {
            y[v] = malloc(sizeof(float) * (size_t)M * N);
            memset(y[v], 0x55, sizeof(float) * (size_t)M * N);
            ef.y = y[v];
            if (v == 0) wb_dense_vnni(xq, M, Kp, bp, N, &ef, nt);
            else dense_amx_variant(v % 2 == 1, v >= 3, xq, M, Kp, bp, N, &ef, nt);
        }
        for (int v = 1; v < 5; v++)
            if (memcmp(y[0], y[v], sizeof(float) * (size_t)M * N)) {
                fprintf(stderr, "%s M=%d K=%d N=%d sp=%d nt=%d: float+GELU outputs differ from VNNI\n",
                        names[v == 1 ? 1 : v == 2 ? 2 : v == 3 ? 4 : 5], M, K, N, sparse_pct, nt);
                bad = 1;
            }
        for (int v = 0; v < 5; v++) free(y[v]);
        free(xs); free(wsc); free(bias);
    }
    free(w); free(xq); free(zp); free(wsum); free(ref); free(out); free(ones); free(zeros); free(bp);
    return bad;
}

/* The tile-block sparse AMX and VNNI kernels on weights with whole 16 x 64 blocks zero (some
 * panels entirely), against the plain reference (int32) and the VNNI dense kernel (float + GELU). */
static int run_tile_case(int M, int K, int N, int nt) {
    const int Kp = (K + 63) / 64 * 64, Mp = (M + 15) / 16 * 16, NP = (N + 15) / 16;
    int8_t *w = calloc((size_t)N * K, 1);
    uint8_t *xq = calloc((size_t)Mp * Kp, 1);
    int32_t *zp = calloc(M, 4), *wsum = calloc(N, 4), *ref = calloc((size_t)M * N, 4), *out = calloc((size_t)M * N, 4);
    for (int p = 0; p < NP; p++)
        for (int c = 0; c < Kp / 64; c++) {
            if (p % 4 == 2 || rnd() % 100 < 60) continue;      /* zero block (every 4th panel empty) */
            if (p % 4 == 3) {   /* a block whose one non-zero weight sits in its last column and k */
                const int n = wb_imin(16 * p + 15, N - 1), k = wb_imin(64 * c + 63, K - 1);
                w[(size_t)n * K + k] = (int8_t)(1 + rnd() % 127);
                continue;
            }
            for (int n = 16 * p; n < 16 * p + 16 && n < N; n++)
                for (int k = 64 * c; k < 64 * c + 64 && k < K; k++)
                    w[(size_t)n * K + k] = rnd() % 3 ? (int8_t)(rnd() % 256 - 128) : 0;
        }
    random_rows_and_reference(w, M, K, N, Kp, xq, zp, wsum, ref);
    int32_t *pp = calloc(NP + 1, 4);
    const int nnz = wb_tile_sparse_count(w, N, K, Kp, pp);
    int32_t *chunk = calloc(nnz + 1, 4);
    int8_t *tiles = calloc((size_t)nnz * 1024 + 1, 1);
    wb_tile_sparse_pack(w, N, K, Kp, pp, chunk, tiles);
    float *ones = malloc(sizeof(float) * (M > N ? M : N)), *zeros = calloc(N, sizeof(float));
    for (int i = 0; i < (M > N ? M : N); i++) ones[i] = 1.0f;
    wb_epi_t e = {N, wsum, ones, zeros, zp, ones, NULL, out, WB_ACT_NONE};
    /* the VNNI kernel's activations: packed as the 1x4 sparse kernel packs them, Kb = Kp / 4, G = 1 */
    uint8_t *xt = calloc((size_t)Mp * Kp, 1);
    WB_PACK_X_SPARSE_VNNI(xq, M, Kp, Kp / 4, 1, xt, nt);
    int bad = 0;
    for (int vnni = 0; vnni <= 1; vnni++)
        for (int cs = 0; cs <= 3; cs += 3) {   /* its own order; columns outermost in 3 segments */
            e.col_segments = cs;
            memset(out, 0x55, (size_t)M * N * 4);
            if (vnni) wb_tile_sparse_vnni(xt, M, Kp, pp, chunk, tiles, N, &e, nt);
            else wb_tile_sparse_amx(xq, M, Kp, pp, chunk, tiles, N, &e, nt);
            if (memcmp(out, ref, (size_t)M * N * 4)) {
                fprintf(stderr, "tile_sparse_%s M=%d K=%d N=%d nt=%d col_segments=%d (%d tiles): int32 mismatch\n",
                        vnni ? "vnni" : "amx", M, K, N, nt, cs, nnz);
                bad = 1;
            }
        }
    /* float + GELU against the VNNI dense kernel */
    const int NPv = (N + 31) / 32 * 2;
    int8_t *bp = calloc((size_t)NPv * Kp * 16, 1);
    wb_pack_dense_vnni(w, N, K, Kp, bp);
    float *xs = malloc(sizeof(float) * M), *wsc = malloc(sizeof(float) * N), *bias = malloc(sizeof(float) * N);
    float *y0 = malloc(sizeof(float) * (size_t)M * N), *y1 = malloc(sizeof(float) * (size_t)M * N);
    for (int m = 0; m < M; m++) xs[m] = 0.001f * (float)(1 + m % 7);
    for (int n = 0; n < N; n++) { wsc[n] = 0.002f * (float)(1 + n % 5); bias[n] = 0.1f * (float)(n % 3) - 0.1f; }
    wb_epi_t ef = {N, wsum, wsc, bias, zp, xs, y0, NULL, WB_ACT_GELU_PORTABLE};
    wb_dense_vnni(xq, M, Kp, bp, N, &ef, nt);
    ef.y = y1;
    for (int vnni = 0; vnni <= 1; vnni++) {
        memset(y1, 0x55, sizeof(float) * (size_t)M * N);
        if (vnni) wb_tile_sparse_vnni(xt, M, Kp, pp, chunk, tiles, N, &ef, nt);
        else wb_tile_sparse_amx(xq, M, Kp, pp, chunk, tiles, N, &ef, nt);
        if (memcmp(y0, y1, sizeof(float) * (size_t)M * N)) {
            fprintf(stderr, "tile_sparse_%s M=%d K=%d N=%d nt=%d: float+GELU outputs differ from dense VNNI\n",
                    vnni ? "vnni" : "amx", M, K, N, nt);
            bad = 1;
        }
    }
    free(w); free(xq); free(zp); free(wsum); free(ref); free(out); free(pp); free(chunk); free(tiles);
    free(ones); free(zeros); free(bp); free(xs); free(wsc); free(bias); free(y0); free(y1); free(xt);
    return bad;
}

/* The two AMX-BF16 products of bf16 attention (wb_attn_amx.h) on random bf16 words, 16 query
 * rows: scores Qb[16][d2p] x Kb[d2p][Sp] and context Pb[16][S2p] (row stride ldpb) x Vb[S2p][dp],
 * against a double-precision sum of the same bf16 products. */
static uint32_t rnd_bf16_pair(void) {   /* two bf16 in [-2, 2): sign, exponent 126-127, 7-bit significand */
    uint32_t w = 0;
    for (int h = 0; h < 2; h++) w |= (uint32_t)((rnd() & 0x80ffu) | (0x3f00u + ((rnd() & 1u) << 7))) << (16 * h);
    return w;
}
static double pair_dot(uint32_t a, uint32_t b) {
    uint8_t x[4], y[4]; memcpy(x, &a, 4); memcpy(y, &b, 4);
    return (double)emu_bf16(x) * emu_bf16(y) + (double)emu_bf16(x + 2) * emu_bf16(y + 2);
}
static int run_attn_amx_case(int d2p, int Sp, int S2p, int dp) {
    const long ldpb = Sp / 2;
    uint32_t *Qb = malloc(4 * (size_t)16 * d2p), *Kb = malloc(4 * (size_t)d2p * Sp);
    uint32_t *Pb = malloc(4 * (size_t)16 * ldpb), *Vb = malloc(4 * (size_t)S2p * dp);
    float *P = malloc(4 * (size_t)16 * Sp), *C = malloc(4 * (size_t)16 * dp);
    for (long i = 0; i < 16L * d2p; i++) Qb[i] = rnd_bf16_pair();
    for (long i = 0; i < (long)d2p * Sp; i++) Kb[i] = rnd_bf16_pair();
    for (long i = 0; i < 16 * ldpb; i++) Pb[i] = rnd_bf16_pair();
    for (long i = 0; i < (long)S2p * dp; i++) Vb[i] = rnd_bf16_pair();
    wb_attn_amx_begin();
    wb_attn_amx_scores(Qb, d2p, Kb, Sp, Sp / 16, P, Sp);
    wb_attn_amx_context(Pb, ldpb, S2p, Vb, dp, C);
    wb_attn_amx_end();
    int bad = 0;
    for (int r = 0; r < 16; r++) {
        for (int j = 0; j < Sp; j++) {
            double want = 0;
            for (int t = 0; t < d2p; t++) want += pair_dot(Qb[r * d2p + t], Kb[(size_t)t * Sp + j]);
            if (fabs(P[(size_t)r * Sp + j] - want) > 1e-5 * (1 + fabs(want))) bad = 1;
        }
        for (int dd = 0; dd < dp; dd++) {
            double want = 0;
            for (int u = 0; u < S2p; u++) want += pair_dot(Pb[r * ldpb + u], Vb[(size_t)u * dp + dd]);
            if (fabs(C[(size_t)r * dp + dd] - want) > 1e-5 * (1 + fabs(want))) bad = 1;
        }
    }
    if (bad) fprintf(stderr, "attention AMX-BF16 products d2p=%d Sp=%d S2p=%d dp=%d differ\n", d2p, Sp, S2p, dp);
    free(Qb); free(Kb); free(Pb); free(Vb); free(P); free(C);
    return bad;
}

/* The VNNI products of int8 attention (wb_attn_int8_tile.h) on random u8 rows and s8 quads:
 * WB_ATTN_I8_MR rows (the last repeated, as a short tile passes them) times nv vectors of 16
 * columns over n quads, against a plain int32 sum; ldb wider than the columns used, as the
 * kernel's Kq (Sp keys) and Vq (dp columns) are. */
static int run_attn_int8_case(int n, int nv, int nr) {
    const size_t ldb = 64 * (size_t)(nv + 1);
    uint8_t *A = malloc((size_t)WB_ATTN_I8_MR * 4 * n);
    int8_t *B = malloc(ldb * n);
    int32_t *C = malloc(sizeof(int32_t) * WB_ATTN_I8_MR * 16 * nv);
    for (size_t i = 0; i < (size_t)WB_ATTN_I8_MR * 4 * n; i++) A[i] = (uint8_t)(rnd() % 256);
    for (size_t i = 0; i < ldb * n; i++) B[i] = (int8_t)(rnd() % 256);
    const uint8_t *a[WB_ATTN_I8_MR];
    int32_t *out[WB_ATTN_I8_MR];
    for (int i = 0; i < WB_ATTN_I8_MR; i++) {
        a[i] = A + (size_t)(i < nr ? i : nr - 1) * 4 * n;
        out[i] = C + (size_t)i * 16 * nv;
    }
    wb_attn_i8_tile_nv(a, B, ldb, n, out, nv);
    int bad = 0;
    for (int i = 0; i < WB_ATTN_I8_MR; i++)
        for (int col = 0; col < 16 * nv; col++) {
            int32_t want = 0;
            for (int t = 0; t < n; t++)
                for (int u = 0; u < 4; u++)
                    want += (int32_t)a[i][4 * t + u] * (int32_t)B[(size_t)t * ldb + 4 * (size_t)col + u];
            if (out[i][col] != want) bad = 1;
        }
    if (bad) fprintf(stderr, "int8 attention VNNI products n=%d nv=%d rows=%d differ\n", n, nv, nr);
    free(A); free(B); free(C);
    return bad;
}

int main(void) {
    wb_pool_run = wb_pool_run_impl;
    static const int shapes[][3] = {{1, 1, 1}, {1, 3, 7}, {2, 5, 1}, {7, 67, 7}, {16, 130, 33}, {17, 64, 32},
                                    {33, 200, 90}, {5, 256, 48}, {40, 129, 65}, {70, 36, 70},
                                    {40, 64, 192}};   /* 6 blocks of 32 columns: 3 segments of 2 */
    int bad = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int sp = 0; sp <= 70; sp += 70)
            for (int nt = 1; nt <= 2; nt++) bad |= run_case(shapes[s][0], shapes[s][1], shapes[s][2], sp, nt);
    static const int tshapes[][3] = {{1, 64, 16}, {1, 3, 7}, {17, 130, 33}, {40, 256, 90}, {70, 200, 48}, {33, 700, 130},
                                     {40, 64, 192}};
    for (size_t s = 0; s < sizeof tshapes / sizeof tshapes[0]; s++)
        for (int nt = 1; nt <= 2; nt++) bad |= run_tile_case(tshapes[s][0], tshapes[s][1], tshapes[s][2], nt);
    static const int ashapes[][4] = {{32, 128, 64, 64}, {16, 64, 32, 16}, {48, 192, 96, 80}};
    for (size_t s = 0; s < sizeof ashapes / sizeof ashapes[0]; s++)
        bad |= run_attn_amx_case(ashapes[s][0], ashapes[s][1], ashapes[s][2], ashapes[s][3]);
    static const int ishapes[][3] = {{1, 1, 1}, {16, 4, 4}, {32, 4, 3}, {2, 2, 4}, {33, 3, 1}, {24, 1, 2}};
    for (size_t s = 0; s < sizeof ishapes / sizeof ishapes[0]; s++)
        bad |= run_attn_int8_case(ishapes[s][0], ishapes[s][1], ishapes[s][2]);
    if (emu_errors) { fprintf(stderr, "%d AMX emulation errors\n", emu_errors); bad = 1; }
    puts(bad ? "FAIL" : "OK");
    return bad;
}
