/* Dense int8 GEMM on AMX (TDPBUSD): two workers, plain and pipelined. */
#ifndef WB_INT8_DENSE_AMX_H
#define WB_INT8_DENSE_AMX_H

#include "wb_int8_dense_vnni.h"
#include "wb_amx_tiles.h"

/* ========================================================================================
 * Dense: AMX (TDPBUSD).  xq must have Mp = M rounded up to 16 rows (zero rows), B packed as
 * for VNNI with an even number of 16-column panels.  Each work item = 32 rows x 32 columns:
 * 2x2 tiles, tmm0-3 C, tmm4-5 A (u8), tmm6-7 B (s8, VNNI layout), all 16 rows x 64 bytes; a last
 * item with <= 16 valid rows uses only the first row tile.  Threads take contiguous item ranges
 * in column-panel-major order, so a panel pair's B (2 x Kp x 16 bytes) stays in L1 while the row
 * blocks pass.  Tile configuration is per thread, so it is loaded inside the parallel region.
 *
 * Two workers, same results (the emulation test checks both):
 *   pipelined (default)  the previous item's epilogue (and GELU) runs a few rows per K chunk,
 *                        between this item's TDPBUSDs, so the AVX-512 work overlaps the tile
 *                        unit's instead of following it (oneDNN's brgemm calls this
 *                        "interleaved stores"); loads ordered A0 B0 dp B1 dp A1 dp dp so the
 *                        first TDPBUSD waits for two loads, not four; A prefetched two chunks
 *                        ahead into L1 (its 16 rows are Kp bytes apart, one line each), the next
 *                        panel pair's B into L2 while the first row block of a pair runs.  At
 *                        K = 768 the 12 chunks' 48 TDPBUSDs take ~770 cycles and the epilogue of
 *                        1024 outputs ~300 (more with GELU), so run one after the other the
 *                        tile unit idles for a third of the time.
 *   plain                load, multiply, store, then the epilogue (the first version; kept for
 *                        the A/B: workbench_ext.int8._set_amx_pipelined(0)).
 * Checked exactly by the emulation test everywhere, and on real tiles where the CPU has AMX: a
 * borrowed Emerald Rapids (results/bench/emr-amx/, 1.2-1.5 TOP/s on 2 cores at 128x768x3072) and
 * a Sapphire Rapids-class development machine (results/bench/spr-amx/, 3.1 TOP/s, where tile
 * loads set the pace and the interleaved epilogue still adds about a third: the timing probe).
 * ====================================================================================== */
static int wb_amx_pipelined = 1;
/* Item order.  0: panel-pair-major (a pair's B stays in L1 while all row blocks pass; A, M x Kp
 * bytes, comes from L2 for every item).  1: grouped -- G panel pairs at a time (their B within
 * wb_amx_group_bytes, so it stays in L2), row blocks outer within a group and pairs inner, so a
 * row block's A (32 x Kp bytes) stays in L1 while the group's B streams past it.  When all the
 * weights fit one group (G >= the number of pairs) there is nothing to group: panel-pair-major.
 * wb_amx_group_pairs > 0 fixes G (the emulation test uses it to get several ragged groups). */
static int wb_amx_order = 0;
static long wb_amx_group_bytes = 1L << 20;
static int wb_amx_group_pairs = 0;
/* Timing probe of the pipelined worker, for finding where an item's time goes on a real AMX CPU
 * (results/bench/emr-amx/amx_ab.py --probe); every mode but 0 gives WRONG outputs.  0: off.
 * 1: no epilogue (nothing written to y).  2: no tile loads or prefetches in the K loop (the
 * TDPBUSDs multiply whatever the A/B tiles hold).  3: no TDPBUSDs (loads, prefetches, epilogue).
 * 4: the whole epilogue, its outputs written to a 16 KB per-thread scratch (rows 32 floats
 * apart) instead of y, so they never miss the caches: what writing y itself costs.
 * At 128x768x3072 on one Emerald Rapids core (1.23 TOP/s, 3.1 GHz) an item takes ~4000 cycles
 * against the 768 of its 48 TDPBUSDs, and skipping the epilogue saved a fifth to a third of the
 * time: these say what the rest is. */
static int wb_amx_probe = 0;
/* Where each worker gets its operands from, for the A/B on AMX CPUs (amx_ab.py); every setting
 * gives the same outputs (the emulation test runs them all).
 *   a_packed  0: A's tiles are loaded straight from xq's rows (16 rows Kp bytes apart); 1: xq is
 *             first copied into tile order (each 16-row x 64-byte tile 1 KB in a row, as B's
 *             panels already are), so a tile load reads consecutive lines.
 *   a_ahead   how many K chunks ahead A is prefetched into L1 (0: not at all).
 *   b_ahead   likewise for the item's B panels (0: not at all, the default: a pair's B is meant to
 *             stay in L1 while its row blocks pass, which it cannot where Kp x 32 bytes
 *             does not fit beside A, e.g. ffn2's K = 3072).
 *   b_next    the next panel pair's B (panel-pair-major order): 0 not prefetched; 1 into L2
 *             during the pair's first row block (a burst of 2 x Kp x 16 bytes in one item's
 *             time); 2 into L2 spread evenly over all the pair's row blocks; 3 likewise into L1. */
typedef struct { int a_packed, a_ahead, b_ahead, b_next; } wb_amx_tuning_t;
static wb_amx_tuning_t wb_amx_tuning = {0, 2, 0, 1};

/* One work item: rows m0..m0+mr-1, columns n0..n0+nr-1, its A rows and B panels. */
typedef struct {
    int m0, mr, n0, nr, mb;
    const uint8_t *A0, *A1;      /* the item's two 16-row A tiles at chunk 0 */
    size_t a_step, a_stride;     /* bytes from one K chunk to the next, and from row to row */
    const int8_t *B0;
} wb_amx_item_t;

/* Panel pairs per group: NP2 (one group, i.e. panel-pair-major) for order 0 or when the weights
 * fit the budget, else G pairs in groups of near-equal size. */
static inline int wb_amx_group(int Kp, int NP2) {
    if (!wb_amx_order) return NP2;
    int G = wb_amx_group_pairs > 0 ? wb_amx_group_pairs : (int)(wb_amx_group_bytes / ((long)32 * Kp));
    if (G < 1) G = 1;
    if (G >= NP2) return NP2;
    if (wb_amx_group_pairs > 0) return G;
    const int groups = (NP2 + G - 1) / G;
    return (NP2 + groups - 1) / groups;
}

/* xq: M x Kp rows, or with a_packed the same bytes in tile order (wb_amx_pack_a). */
static inline wb_amx_item_t wb_amx_item(const wb_epi_t *e, const uint8_t *xq, int M, int Kp,
                                        const int8_t *Bp, int N, long t, int MB, int G, int a_packed) {
    wb_amx_item_t it;
    const int NP2 = (N + 31) / 32;
    int p2;
    if (G >= NP2 || e->col_segments) {    /* panel-pair-major: t = p2 * MB + mb (wb_epi_item) */
        wb_epi_item(e, t, MB, NP2, 0, &it.mb, &p2);
    } else {                  /* grouped: t = group start * MB + mb * gsz + pair in group */
        const long per = (long)G * MB;
        const int g0 = (int)(t / per) * G, gsz = wb_imin(G, NP2 - g0);
        const long r = t - (long)g0 * MB;
        it.mb = (int)(r / gsz);
        p2 = g0 + (int)(r % gsz);
    }
    it.m0 = it.mb * 32;
    it.mr = wb_imin(32, M - it.m0);
    it.n0 = p2 * 32;
    it.nr = wb_imin(32, N - it.n0);
    if (a_packed) {
        it.a_step = 1024;
        it.a_stride = 64;
        it.A0 = xq + (size_t)(it.m0 / 16) * (size_t)(Kp / 64) * 1024;
        it.A1 = it.A0 + (size_t)(Kp / 64) * 1024;
    } else {
        it.a_step = 64;
        it.a_stride = (size_t)Kp;
        it.A0 = xq + (size_t)it.m0 * Kp;
        it.A1 = it.A0 + (size_t)16 * Kp;
    }
    it.B0 = Bp + (size_t)(2 * p2) * (size_t)(Kp / 4) * 64;
    return it;
}

/* Epilogue (and activation) of rows r0..r1-1 of an item whose s32 sums are in C[32][32]. */
WB_AMX static inline void wb_amx_epi_rows(const wb_epi_t *e, const int32_t *C, const wb_amx_item_t *it,
                                          int r0, int r1) {
    if (r1 > it->mr) r1 = it->mr;
    if (r0 >= r1) return;
    WB_DENSE_AVX512_EPILOGUE(e, C + (size_t)r0 * 32, 32, it->m0 + r0, r1 - r0, it->n0, it->nr);
}

WB_AMX static void wb_amx_worker_plain(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N,
                                       const wb_epi_t *e, long t0, long t1, int a_packed) {
    wb_amx_config();
    const int MB = (M + 31) / 32, chunks = Kp / 64, G = wb_amx_group(Kp, (N + 31) / 32);
    const size_t panel = (size_t)(Kp / 4) * 64;
    int32_t C[32 * 32];
    for (long t = t0; t < t1; t++) {
        const wb_amx_item_t it = wb_amx_item(e, xq, M, Kp, Bp, N, t, MB, G, a_packed);
        const uint8_t *A0 = it.A0, *A1 = it.A1;
        const size_t as = it.a_step, ar = it.a_stride;
        const int8_t *B0 = it.B0, *B1 = B0 + panel;
        _tile_zero(0);
        _tile_zero(1);
        if (it.mr > 16) {   /* rows m0+16.. exist in xq (padded to a multiple of 16 rows) */
            _tile_zero(2);
            _tile_zero(3);
            for (int c = 0; c < chunks; c++) {
                _tile_loadd(4, A0 + c * as, ar);
                _tile_loadd(6, B0 + (size_t)c * 1024, 64);
                _tile_loadd(7, B1 + (size_t)c * 1024, 64);
                _tile_loadd(5, A1 + c * as, ar);
                _tile_dpbusd(0, 4, 6);
                _tile_dpbusd(1, 4, 7);
                _tile_dpbusd(2, 5, 6);
                _tile_dpbusd(3, 5, 7);
            }
            _tile_stored(2, C + 16 * 32, 128);
            _tile_stored(3, C + 16 * 32 + 16, 128);
        } else {
            for (int c = 0; c < chunks; c++) {
                _tile_loadd(4, A0 + c * as, ar);
                _tile_loadd(6, B0 + (size_t)c * 1024, 64);
                _tile_loadd(7, B1 + (size_t)c * 1024, 64);
                _tile_dpbusd(0, 4, 6);
                _tile_dpbusd(1, 4, 7);
            }
        }
        _tile_stored(0, C, 128);
        _tile_stored(1, C + 16, 128);
        wb_amx_epi_rows(e, C, &it, 0, it.mr);
    }
    _tile_release();
}

/* Prefetch one 64-byte-wide column strip of `rows` rows `stride` bytes apart. */
static inline void wb_prefetch_rows(const void *p, int rows, size_t stride, int hint_l2) {
    const char *q = (const char *)p;
    for (int r = 0; r < rows; r++) {
        if (hint_l2) _mm_prefetch(q + (size_t)r * stride, _MM_HINT_T1);
        else _mm_prefetch(q + (size_t)r * stride, _MM_HINT_T0);
    }
}

/* Prefetch the two 16-row A tiles of K chunk g (the second only when `two`). */
static inline void wb_amx_prefetch_a(const wb_amx_item_t *it, int g, int two) {
    wb_prefetch_rows(it->A0 + (size_t)g * it->a_step, 16, it->a_stride, 0);
    if (two) wb_prefetch_rows(it->A1 + (size_t)g * it->a_step, 16, it->a_stride, 0);
}

/* Probe 4: e with its outputs moved to `scratch` (128 rows x 32, 16 KB): the item's y[m][n0 + j]
 * (or yi) lands at scratch[(m - m0 / 128 * 128) * 32 + j]. */
static inline const wb_epi_t *wb_amx_probe_epi(const wb_epi_t *e, const wb_amx_item_t *it, wb_epi_t *pe,
                                               float *scratch) {
    const size_t off = (size_t)it->n0 + (size_t)(it->m0 / 128 * 128) * 32;
    *pe = *e;
    pe->N = 32;
    if (e->yi) pe->yi = (int32_t *)(void *)scratch - off;
    else pe->y = scratch - off;
    return pe;
}

WB_AMX static void wb_amx_worker_pipelined(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N,
                                           const wb_epi_t *e, long t0, long t1,
                                           wb_amx_tuning_t tun) {
    wb_amx_config();
    const int MB = (M + 31) / 32, chunks = Kp / 64, NP2 = (N + 31) / 32, G = wb_amx_group(Kp, NP2);
    const int pp_major = G >= NP2 || e->col_segments, ap = tun.a_packed;
    const long total = (long)NP2 * MB;
    const size_t panel = (size_t)(Kp / 4) * 64;
    int32_t C[2][32 * 32];           /* this item's sums, the previous item's (epilogue pending) */
    wb_amx_item_t prev;
    memset(&prev, 0, sizeof prev);
    int have_prev = 0, cur = 0;
    const int probe = wb_amx_probe, do_load = probe != 2, do_dp = probe != 3, do_epi = probe != 1;
    float probe_y[128 * 32] __attribute__((aligned(64)));   /* probe 4's stand-in for y */
    wb_epi_t probe_e;
    for (long t = t0; t < t1; t++) {
        const wb_amx_item_t it = wb_amx_item(e, xq, M, Kp, Bp, N, t, MB, G, ap);
        const int has_next = t + 1 < t1;
        const wb_amx_item_t nx = has_next ? wb_amx_item(e, xq, M, Kp, Bp, N, t + 1, MB, G, ap) : it;
        const uint8_t *A0 = it.A0, *A1 = it.A1;
        const size_t as = it.a_step, ar = it.a_stride;
        const int8_t *B0 = it.B0, *B1 = B0 + panel;
        const int two = it.mr > 16;    /* rows m0+16.. exist in xq (padded to 16 rows) */
        /* panel-pair-major: the next panel pair's B (item t + MB), in a burst during this
         * pair's first row block (b_next 1) or a share in every row block (2, 3); grouped: the
         * next item's B follows in memory, the L2 streamer fetches it */
        const int8_t *Bn = NULL;
        if (pp_major && tun.b_next && t + MB < total && (tun.b_next > 1 || (it.mb == 0 && t + MB < t1)))
            Bn = wb_amx_item(e, xq, M, Kp, Bp, N, t + MB, MB, G, ap).B0;
        const int bn_l2 = tun.b_next != 3;
        /* the next item's A only when it is another row block (grouped: mostly the same) */
        const int nx_new_a = has_next && nx.A0 != it.A0;
        const int32_t *Cp = C[cur ^ 1];
        const int per = have_prev && do_epi ? (prev.mr + chunks - 1) / chunks : 0;
        const wb_epi_t *ep = probe == 4 && have_prev ? wb_amx_probe_epi(e, &prev, &probe_e, probe_y) : e;
        _tile_zero(0);
        _tile_zero(1);
        if (two) { _tile_zero(2); _tile_zero(3); }
        for (int c = 0; c < chunks; c++) {
            if (do_load) {
                /* A a_ahead chunks ahead: this item's, or the next item's first chunks */
                const int g = c + tun.a_ahead;
                if (tun.a_ahead && g < chunks) wb_amx_prefetch_a(&it, g, two);
                else if (tun.a_ahead && nx_new_a && g - chunks < chunks)
                    wb_amx_prefetch_a(&nx, g - chunks, nx.mr > 16);
                const int gb = c + tun.b_ahead;   /* B likewise: this item's, or the next's */
                const int8_t *bsrc = gb < chunks ? B0 : has_next && gb - chunks < chunks ? nx.B0 : NULL;
                if (tun.b_ahead && bsrc) {
                    const size_t off = (size_t)(gb < chunks ? gb : gb - chunks) * 1024;
                    wb_prefetch_rows(bsrc + off, 16, 64, 0);
                    wb_prefetch_rows(bsrc + panel + off, 16, 64, 0);
                }
                if (Bn && tun.b_next == 1) {
                    wb_prefetch_rows(Bn + (size_t)c * 1024, 16, 64, 1);
                    wb_prefetch_rows(Bn + panel + (size_t)c * 1024, 16, 64, 1);
                } else if (Bn) {   /* chunk j of the next pair at step i = j * MB of the pair */
                    const long i = (long)it.mb * chunks + c;
                    if (i % MB == 0) {
                        const size_t j = (size_t)(i / MB) * 1024;
                        wb_prefetch_rows(Bn + j, 16, 64, bn_l2);
                        wb_prefetch_rows(Bn + panel + j, 16, 64, bn_l2);
                    }
                }
                _tile_loadd(4, A0 + c * as, ar);
                _tile_loadd(6, B0 + (size_t)c * 1024, 64);
            }
            if (do_dp) _tile_dpbusd(0, 4, 6);
            if (do_load) _tile_loadd(7, B1 + (size_t)c * 1024, 64);
            if (do_dp) _tile_dpbusd(1, 4, 7);
            if (two) {
                if (do_load) _tile_loadd(5, A1 + c * as, ar);
                if (do_dp) {
                    _tile_dpbusd(2, 5, 6);
                    _tile_dpbusd(3, 5, 7);
                }
            }
            /* a slice of the previous item's epilogue while these TDPBUSDs run */
            if (per) wb_amx_epi_rows(ep, Cp, &prev, c * per, (c + 1) * per);
        }
        int32_t *Cc = C[cur];
        _tile_stored(0, Cc, 128);
        _tile_stored(1, Cc + 16, 128);
        if (two) {
            _tile_stored(2, Cc + 16 * 32, 128);
            _tile_stored(3, Cc + 16 * 32 + 16, 128);
        }
        prev = it;
        have_prev = 1;
        cur ^= 1;
    }
    if (have_prev && do_epi)
        wb_amx_epi_rows(probe == 4 ? wb_amx_probe_epi(e, &prev, &probe_e, probe_y) : e, C[cur ^ 1], &prev, 0, prev.mr);
    _tile_release();
}

/* xq (Mp x Kp, Mp a multiple of 16) in tile order: 16-row block r, K chunk c at (r * Kp / 64 + c)
 * KB, its 16 rows 64 bytes apart. */
static void wb_amx_pack_a(const uint8_t *xq, int Mp, int Kp, uint8_t *out) {
    const int chunks = Kp / 64;
    for (int r = 0; r < Mp / 16; r++)
        for (int c = 0; c < chunks; c++)
            for (int i = 0; i < 16; i++)
                memcpy(out + ((size_t)r * chunks + c) * 1024 + (size_t)i * 64,
                       xq + (size_t)(r * 16 + i) * Kp + (size_t)c * 64, 64);
}

typedef struct {
    const uint8_t *xq;    /* rows, or in tile order when tun.a_packed */
    int M, Kp;
    const int8_t *Bp;
    int N;
    const wb_epi_t *e;
    int pipelined;
    wb_amx_tuning_t tun;
} wb_dense_amx_job_t;

/* a range of items: each call configures the tiles for its thread and releases them after */
static void wb_dense_amx_chunk(void *p, long t0, long t1) {
    const wb_dense_amx_job_t *j = (const wb_dense_amx_job_t *)p;
    if (j->pipelined) wb_amx_worker_pipelined(j->xq, j->M, j->Kp, j->Bp, j->N, j->e, t0, t1, j->tun);
    else wb_amx_worker_plain(j->xq, j->M, j->Kp, j->Bp, j->N, j->e, t0, t1, j->tun.a_packed);
}

static void wb_dense_amx(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N,
                         const wb_epi_t *e, int nt) {
    const int MB = (M + 31) / 32, NP2 = (N + 31) / 32;
    const long total = (long)NP2 * MB;
    wb_dense_amx_job_t job = {xq, M, Kp, Bp, N, e, wb_amx_pipelined, wb_amx_tuning};
    if (job.tun.a_packed) {   /* the caller's scratch: the workers take none */
        const int Mp = (M + 15) / 16 * 16;
        uint8_t *packed = (uint8_t *)wb_thread_scratch((size_t)Mp * Kp);
        if (!packed) job.tun.a_packed = 0;   /* out of memory: the rows as they are */
        else {
            wb_amx_pack_a(xq, Mp, Kp, packed);
            job.xq = packed;
        }
    }
    /* two ranges per thread: long enough for the pipelined worker's overlap, and a late
     * thread's second range is taken over by the caller */
    wb_parallel_for(nt, total, wb_grain(total, nt, 2), wb_dense_amx_chunk, &job);
}

#endif
