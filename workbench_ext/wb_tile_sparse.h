/* Tile-block sparse int8 GEMM for AMX and AVX-512 VNNI (workbench_ext.int8.TileSparseInt8Linear).
 *
 * AMX multiplies whole tiles: one TDPBUSD takes a 16-column x 64-k block of the weights (one B
 * tile, 1 KB) and cannot skip the zero 1x4 blocks inside it, so the 1x4 block-sparse format
 * gains nothing there (its layers run the AVX-512 VNNI kernel).  This format skips whole tiles:
 * a 16-column panel of W[N][K] is cut along K into Kp/64 blocks of 16 columns x 64 k, and only
 * blocks with a non-zero weight are stored, each already in the B-tile (VNNI) layout:
 *
 *   panel_ptr  int32 [NP + 1]            NP = ceil(N / 16); panel p's blocks are
 *                                        panel_ptr[p] .. panel_ptr[p+1]-1
 *   chunk      int32 [nnz_tiles]         the block's k / 64, ascending within a panel
 *   tiles      int8  [nnz_tiles][16 kq][16 n][4]   w[16p + n][64 chunk + 4 kq + i]
 *
 * Weights pruned in 16 x 64 blocks (`magnitude_prune_(model, s, block=(16, 64))`) have exactly
 * a fraction s of their tiles zero; 1x4-pruned weights have almost none (at 90 % sparsity a
 * tile is all zero with probability 0.9^256).  The engine's per-layer choice times this kernel
 * against the dense AMX and the 1x4 sparse ones and keeps the fastest.
 *
 * Kernel: work item = 32 rows x 2 panels (32 columns), C in tmm0-3, A in tmm4-5, B in tmm6-7;
 * the two panels' block lists are walked together so a chunk both panels keep loads its A tiles
 * once.  Items run row-block major (a 32-row block of A, 32 x Kp bytes, stays in L1 while the
 * panels pass), handed out dynamically (panels keep different numbers of tiles).
 * Exact: the same s32 sums and epilogue as every other int8 path (bit-identical outputs).
 * Checked exactly by the scalar emulation test (testing/emulate_isa.c) everywhere, and on real
 * tiles where the CPU has AMX: 90 %-tile-sparse 128x768x3072 ran at 3.3 dense-equivalent TOP/s
 * on 2 cores of a borrowed Emerald Rapids (results/bench/emr-amx/), 9.8 on a Sapphire
 * Rapids-class development machine (results/bench/spr-amx/).
 */
#ifndef WB_TILE_SPARSE_H
#define WB_TILE_SPARSE_H

#include <limits.h>
#include "wb_int8.h"

/* Whether the 16 x 64 block (panel p, chunk c) of W[N][K] holds a non-zero weight. */
static int wb_tile_nonzero(const int8_t *w, int N, int K, int p, int c) {
    for (int n = 16 * p; n < wb_imin(16 * p + 16, N); n++)
        for (int k = 64 * c; k < wb_imin(64 * c + 64, K); k++)
            if (w[(size_t)n * K + k]) return 1;
    return 0;
}

/* panel_ptr[NP + 1] of W[N][K] (Kp = K rounded up to 64); returns the number of stored tiles. */
static int wb_tile_sparse_count(const int8_t *w, int N, int K, int Kp, int32_t *panel_ptr) {
    const int NP = (N + 15) / 16, chunks = Kp / 64;
    int nnz = 0;
    panel_ptr[0] = 0;
    for (int p = 0; p < NP; p++) {
        for (int c = 0; c < chunks; c++) nnz += wb_tile_nonzero(w, N, K, p, c);
        panel_ptr[p + 1] = nnz;
    }
    return nnz;
}

/* chunk[] and tiles[] (zero-filled by the caller) for the panel_ptr of wb_tile_sparse_count. */
static void wb_tile_sparse_pack(const int8_t *w, int N, int K, int Kp, const int32_t *panel_ptr,
                                int32_t *chunk, int8_t *tiles) {
    const int NP = (N + 15) / 16, chunks = Kp / 64;
    for (int p = 0; p < NP; p++) {
        int j = panel_ptr[p];
        for (int c = 0; c < chunks && j < panel_ptr[p + 1]; c++) {
            if (!wb_tile_nonzero(w, N, K, p, c)) continue;
            int8_t *t = tiles + (size_t)j * 1024;
            for (int n = 16 * p; n < wb_imin(16 * p + 16, N); n++)
                for (int k = 64 * c; k < wb_imin(64 * c + 64, K); k++) {
                    const int kk = k - 64 * c;
                    t[(kk / 4) * 64 + (n - 16 * p) * 4 + (kk & 3)] = w[(size_t)n * K + k];
                }
            chunk[j++] = c;
        }
    }
}

typedef struct {
    const uint8_t *xq; int M, Kp; const int32_t *panel_ptr, *chunk; const int8_t *tiles; int N;
    const wb_epi_t *e;
} wb_tile_sparse_job_t;

/* A chunk of items (32 rows x 2 panels each); a function of its own so it carries the AMX
 * target attribute. */
WB_AMX static void wb_tile_sparse_amx_chunk(void *p, long tb, long te) {
    const wb_tile_sparse_job_t *j = (const wb_tile_sparse_job_t *)p;
    const uint8_t *xq = j->xq;
    const int M = j->M, Kp = j->Kp, N = j->N;
    const int32_t *panel_ptr = j->panel_ptr, *chunk = j->chunk;
    const int8_t *tiles = j->tiles;
    const wb_epi_t *e = j->e;
    const int NP = (N + 15) / 16, NP2 = (NP + 1) / 2;
    wb_amx_config();
    int32_t C[32 * 32];
    for (long t = tb; t < te; t++) {
        int mb, p2;
        wb_epi_item(e, t, (M + 31) / 32, NP2, 1, &mb, &p2);
        const int m0 = mb * 32, mr = wb_imin(32, M - m0), n0 = p2 * 32, nr = wb_imin(32, N - n0);
        const int two = mr > 16;   /* rows m0+16.. exist in xq (padded to 16 rows) */
        const uint8_t *A0 = xq + (size_t)m0 * Kp, *A1 = A0 + (size_t)16 * Kp;
        const int pa = 2 * p2, pb = 2 * p2 + 1;
        int ia = panel_ptr[pa], ib = pb < NP ? panel_ptr[pb] : 0;
        const int ea = panel_ptr[pa + 1], eb = pb < NP ? panel_ptr[pb + 1] : 0;
        _tile_zero(0);
        _tile_zero(2);
        if (two) { _tile_zero(1); _tile_zero(3); }
        while (ia < ea || ib < eb) {
            const int ca = ia < ea ? chunk[ia] : INT_MAX, cb = ib < eb ? chunk[ib] : INT_MAX;
            const int c = ca < cb ? ca : cb;
            _tile_loadd(4, A0 + (size_t)c * 64, Kp);
            if (two) _tile_loadd(5, A1 + (size_t)c * 64, Kp);
            if (ca == c) {   /* panel a: C rows 0-15 in tmm0, rows 16-31 in tmm1 */
                _tile_loadd(6, tiles + (size_t)ia * 1024, 64);
                _tile_dpbusd(0, 4, 6);
                if (two) _tile_dpbusd(1, 5, 6);
                ia++;
            }
            if (cb == c) {   /* panel b: tmm2, tmm3 */
                _tile_loadd(7, tiles + (size_t)ib * 1024, 64);
                _tile_dpbusd(2, 4, 7);
                if (two) _tile_dpbusd(3, 5, 7);
                ib++;
            }
        }
        _tile_stored(0, C, 128);
        _tile_stored(2, C + 16, 128);
        if (two) {
            _tile_stored(1, C + 16 * 32, 128);
            _tile_stored(3, C + 16 * 32 + 16, 128);
        }
        WB_DENSE_AVX512_EPILOGUE(e, C, 32, m0, mr, n0, nr);
    }
    _tile_release();
}

/* ---- AVX-512 VNNI on the same format ------------------------------------------------------
 * Per 4 k of a stored tile: one 64-byte load of the item's 16 rows' activations, shared by the
 * tile's 16 columns, each column's 4 weights the broadcast operand of its vpdpbusd (the tile's
 * row kq holds them side by side: 16 broadcasts at constant offsets).  16 accumulators, one per
 * column, 16 rows each: column-major sums, finished by the 1x4 sparse kernel's epilogue
 * (WB_SPARSE_VNNI_EPILOGUE, transposes included).
 * Activations come packed as the 1x4 sparse VNNI kernel packs them (WB_PACK_X_SPARSE_VNNI, one
 * 16-row group, Kb = Kp / 4 blocks: xt[mb][kb][16 rows][4 k]): each 4 k of the 16 rows is one
 * 64-byte vector, and a tile's 16 x 64 activation bytes one contiguous KB.  The 1x4 kernel loads
 * 64 activation bytes for every vpdpbusd (two columns rarely share a k block), which bounds it
 * near half the VNNI peak on Zen 5 (results/bench/zen5-quant-pack/kernel_harness.txt); here one
 * load serves 16.  The other way round (one weight vector shared by 16 rows, activations
 * broadcast, a row-major tile and the dense epilogue) was 1.02-1.28x slower at every shape and
 * thread count tried (results/bench/zen5-tile-vnni/README.md).
 * Work item = 16 rows x one 16-column panel, row blocks outermost so each thread keeps its rows
 * from op to op (wb_pool_impl.h).  Rows past M are packed as zeros, computed, and not written.
 * Exact: the same s32 sums as every int8 path, and the 1x4 kernel's epilogue (same bits). */
#define WB_TS_COL(n)                                                                          \
    { int32_t wv; memcpy(&wv, T + 64 * kq + 4 * n, 4);                                        \
      c##n = _mm512_dpbusd_epi32(c##n, x, _mm512_set1_epi32(wv)); }
WB_AVX512 static void wb_tile_sparse_vnni_panel(const uint8_t *xt, const int32_t *chunk, const int8_t *tiles,
                                                int t0, int t1, int32_t *Ct) {
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0;
    __m512i c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0, c12 = c0, c13 = c0, c14 = c0, c15 = c0;
    for (int t = t0; t < t1; t++) {
        const uint8_t *a = xt + (size_t)chunk[t] * 1024;
        const int8_t *T = tiles + (size_t)t * 1024;
        _Pragma("GCC unroll 16")
        for (int kq = 0; kq < 16; kq++) {
            const __m512i x = _mm512_loadu_si512((const void *)(a + 64 * kq));
            WB_TS_COL(0) WB_TS_COL(1) WB_TS_COL(2) WB_TS_COL(3) WB_TS_COL(4) WB_TS_COL(5)
            WB_TS_COL(6) WB_TS_COL(7) WB_TS_COL(8) WB_TS_COL(9) WB_TS_COL(10) WB_TS_COL(11)
            WB_TS_COL(12) WB_TS_COL(13) WB_TS_COL(14) WB_TS_COL(15)
        }
    }
#define WB_TS_STORE(n) _mm512_storeu_si512((void *)(Ct + n * 64), c##n);
    WB_TS_STORE(0) WB_TS_STORE(1) WB_TS_STORE(2) WB_TS_STORE(3) WB_TS_STORE(4) WB_TS_STORE(5)
    WB_TS_STORE(6) WB_TS_STORE(7) WB_TS_STORE(8) WB_TS_STORE(9) WB_TS_STORE(10) WB_TS_STORE(11)
    WB_TS_STORE(12) WB_TS_STORE(13) WB_TS_STORE(14) WB_TS_STORE(15)
#undef WB_TS_STORE
}
#undef WB_TS_COL

static void wb_tile_sparse_vnni_chunk(void *p, long tb, long te) {
    const wb_tile_sparse_job_t *j = (const wb_tile_sparse_job_t *)p;
    const int M = j->M, Kp = j->Kp, N = j->N, NP = (N + 15) / 16;
    int32_t Ct[16 * 64] __attribute__((aligned(64)));   /* the epilogue's column stride: 64 */
    for (long t = tb; t < te; t++) {
        int mb, pn;
        wb_epi_item(j->e, t, (M + 15) / 16, NP, 1, &mb, &pn);
        const int m0 = mb * 16, mr = wb_imin(16, M - m0), n0 = pn * 16, nr = wb_imin(16, N - n0);
        const uint8_t *xt = j->xq + (size_t)mb * 16 * Kp;   /* this row block's packed rows */
        wb_tile_sparse_vnni_panel(xt, j->chunk, j->tiles, j->panel_ptr[pn], j->panel_ptr[pn + 1], Ct);
        WB_SPARSE_VNNI_EPILOGUE(Ct, m0, mr, n0, nr, j->e);   /* and the fused activation */
    }
}

/* xt: the rows packed by WB_PACK_X_SPARSE_VNNI(xq, M, Kp, Kp / 4, 1, xt, nt) (or quantized and
 * packed by wb_quant_pack_sparse_vnni with the same Kb and G); the format above. */
static void wb_tile_sparse_vnni(const uint8_t *xt, int M, int Kp, const int32_t *panel_ptr,
                                const int32_t *chunk, const int8_t *tiles, int N, const wb_epi_t *e,
                                int nt) {
    const long total = (long)((M + 15) / 16) * ((N + 15) / 16);
    wb_tile_sparse_job_t job = {xt, M, Kp, panel_ptr, chunk, tiles, N, e};
    wb_parallel_for(nt, total, wb_grain(total, nt, 4), wb_tile_sparse_vnni_chunk, &job);
}

/* xq: Mp = M rounded up to 16 rows (zero rows), Kp columns; the format above. */
static void wb_tile_sparse_amx(const uint8_t *xq, int M, int Kp, const int32_t *panel_ptr,
                               const int32_t *chunk, const int8_t *tiles, int N, const wb_epi_t *e,
                               int nt) {
    const int NP2 = ((N + 15) / 16 + 1) / 2;
    const long total = (long)((M + 31) / 32) * NP2;
    wb_tile_sparse_job_t job = {xq, M, Kp, panel_ptr, chunk, tiles, N, e};
    /* chunks of an eighth of a row block's panel pairs: panels differ in how many tiles they keep */
    wb_parallel_for(nt, total, NP2 / 8 > 1 ? NP2 / 8 : 1, wb_tile_sparse_amx_chunk, &job);
}

#endif
