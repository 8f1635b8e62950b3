/* 1x4 block-sparse int8 GEMM on AVX-512 VNNI (16 * G-row tiles); its activations are packed by
 * wb_sparse_pack.h and its column-major tiles leave through wb_sparse_epilogue.h. */
#ifndef WB_INT8_SPARSE_VNNI_H
#define WB_INT8_SPARSE_VNNI_H

#include "wb_sparse_epilogue.h"
#include "wb_sparse_pack.h"

#ifndef WB_SPV_GMAX
#define WB_SPV_GMAX 4
#endif

/* The most 16-row groups a tile of activations takes: 1..4 as set by the A/B switch
 * (workbench_ext.int8._set_sparse_vnni_groups), 0 (the default) by the layer's K: 4, or 2 where a
 * 4-group tile's activations (Kb x 64 x 4 bytes) would pass 96 KB (K > 1536). More groups reuse
 * each weight block's broadcast on more rows; fewer keep a tile's activations nearer the core.
 * On a Zen 4 at 90 % sparsity (1 and 2 threads, a C harness and amx_ab.py run on VNNI), 4 groups
 * were the fastest at 128 x 768 x 3072 / 2304 / 768 (1.05-1.2x over 2) and 2 groups at 128 x 3072
 * x 768 (1.08-1.13x over 4). Intel's cores are untimed (results/bench/emr-amx/amx_ab.py). */
static int wb_spv_gmax = 0;
#define WB_SPV_AUTO_BYTES (96L * 1024)

static int wb_sparse_vnni_groups(int M, int Kb) {
    int gmax = wb_spv_gmax;
    if (gmax < 1) gmax = (long)Kb * 64 * WB_SPV_GMAX > WB_SPV_AUTO_BYTES ? 2 : WB_SPV_GMAX;
    if (gmax > WB_SPV_GMAX) gmax = WB_SPV_GMAX;
    int g = (M + 15) / 16;
    return g > gmax ? gmax : (g < 1 ? 1 : g);
}

/* Sums of 2 columns (rows b..b1 and d..d1 of the CSR) over a tile of 16 * G rows. */
WB_AVX512 static inline __attribute__((always_inline)) void
wb_vnni_sp_pair(const uint8_t *Xt, const int G, const int32_t *col, const int8_t *vals,
                int b, const int b1, int d, const int d1, int32_t *C0, int32_t *C1) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    __m512i e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    const size_t bs = (size_t)64 * G;
#define WB_SPV(bb, A0, A1, A2, A3)                                                             \
    {                                                                                         \
        int32_t wv; memcpy(&wv, vals + 4 * (size_t)(bb), 4);                                  \
        const __m512i w = _mm512_set1_epi32(wv);                                              \
        const uint8_t *x = Xt + (size_t)col[bb] * bs;                                         \
        A0 = _mm512_dpbusd_epi32(A0, _mm512_loadu_si512((const void *)x), w);                 \
        if (G > 1) A1 = _mm512_dpbusd_epi32(A1, _mm512_loadu_si512((const void *)(x + 64)), w);  \
        if (G > 2) A2 = _mm512_dpbusd_epi32(A2, _mm512_loadu_si512((const void *)(x + 128)), w); \
        if (G > 3) A3 = _mm512_dpbusd_epi32(A3, _mm512_loadu_si512((const void *)(x + 192)), w); \
    }
    const int n = wb_imin(b1 - b, d1 - d);
    for (int i = 0; i < n; i++) {
        WB_SPV(b + i, a0, a1, a2, a3)
        WB_SPV(d + i, e0, e1, e2, e3)
    }
    for (b += n; b < b1; b++) WB_SPV(b, a0, a1, a2, a3)
    for (d += n; d < d1; d++) WB_SPV(d, e0, e1, e2, e3)
#undef WB_SPV
    _mm512_storeu_si512((void *)C0, a0);
    if (G > 1) _mm512_storeu_si512((void *)(C0 + 16), a1);
    if (G > 2) _mm512_storeu_si512((void *)(C0 + 32), a2);
    if (G > 3) _mm512_storeu_si512((void *)(C0 + 48), a3);
    if (C1) {
        _mm512_storeu_si512((void *)C1, e0);
        if (G > 1) _mm512_storeu_si512((void *)(C1 + 16), e1);
        if (G > 2) _mm512_storeu_si512((void *)(C1 + 32), e2);
        if (G > 3) _mm512_storeu_si512((void *)(C1 + 48), e3);
    }
}

#define WB_VNNI_SP_TILE(G)                                                                    \
WB_AVX512 static void wb_vnni_sparse_tile_g##G(const uint8_t *Xt, int n0, int nr, const int32_t *rp, \
                                               const int32_t *col, const int8_t *vals, int32_t *Ct) { \
    int j = 0;                                                                                \
    for (; j + 2 <= nr; j += 2)                                                               \
        wb_vnni_sp_pair(Xt, G, col, vals, rp[n0 + j], rp[n0 + j + 1], rp[n0 + j + 1], rp[n0 + j + 2], \
                        Ct + (size_t)j * 64, Ct + (size_t)(j + 1) * 64);                      \
    if (j < nr)                                                                               \
        wb_vnni_sp_pair(Xt, G, col, vals, rp[n0 + j], rp[n0 + j + 1], 0, 0, Ct + (size_t)j * 64, NULL); \
}
WB_VNNI_SP_TILE(1)
WB_VNNI_SP_TILE(2)
WB_VNNI_SP_TILE(3)
WB_VNNI_SP_TILE(4)

/* xt: packed by wb_pack_x_sparse_u8_g with the same G (G = wb_sparse_vnni_groups(M, Kb) by default). */
static void wb_sparse_vnni_chunk(void *p, long tb, long te) {
    const wb_sparse_job_t *j = (const wb_sparse_job_t *)p;
    const int G = j->G, MT = 16 * G;
    for (long t = tb; t < te; t++) {
        int mb, nb;
        wb_epi_item(j->e, t, j->MB, j->NB, 1, &mb, &nb);
        int m0 = mb * MT, mr = wb_imin(MT, j->M - m0);
        int n0 = nb * WB_SPV_NC, nr = wb_imin(WB_SPV_NC, j->N - n0);
        int32_t Ct[WB_SPV_NC * 64] __attribute__((aligned(64)));
        const uint8_t *X = (const uint8_t *)j->x + (size_t)mb * j->Kb * MT * 4;
        const int8_t *vals = (const int8_t *)j->vals;
        switch (G) {
            case 4: wb_vnni_sparse_tile_g4(X, n0, nr, j->rp, j->col, vals, Ct); break;
            case 3: wb_vnni_sparse_tile_g3(X, n0, nr, j->rp, j->col, vals, Ct); break;
            case 2: wb_vnni_sparse_tile_g2(X, n0, nr, j->rp, j->col, vals, Ct); break;
            default: wb_vnni_sparse_tile_g1(X, n0, nr, j->rp, j->col, vals, Ct); break;
        }
        WB_SPARSE_VNNI_EPILOGUE(Ct, m0, mr, n0, nr, j->e);   /* and the fused activation */
    }
}

static void wb_sparse_vnni_g(const uint8_t *xt, int M, int Kb, int G, const int32_t *rp, const int32_t *col,
                             const int8_t *vals, int N, const wb_epi_t *e, int nt) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT, NB = (N + WB_SPV_NC - 1) / WB_SPV_NC;
    wb_sparse_job_t job = {xt, M, 0, Kb, G, MB, NB, rp, 0, col, vals, N, e};
    wb_parallel_for(nt, (long)MB * NB, 1, wb_sparse_vnni_chunk, &job);
}

/* the original API: 16-row tiles */
static void wb_sparse_vnni(const uint8_t *xt, int M, int Kb, const int32_t *rp, const int32_t *col,
                           const int8_t *vals, int N, const wb_epi_t *e, int nt) {
    wb_sparse_vnni_g(xt, M, Kb, 1, rp, col, vals, N, e, nt);
}

#endif
