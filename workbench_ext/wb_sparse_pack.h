/* Activations packed for the sparse VNNI kernels: uint8 rows xq[M][Kp] as tiles of 16 * G rows,
 * 4-byte K groups outer (xt[tile][kb][r]), so one 64-byte load gives 16 rows' group kb; and the
 * per-token quantization fused with that packing. Shared by the 1x4 block-sparse
 * (wb_int8_sparse_vnni.h) and the 16x64 tile-sparse (wb_tile_sparse.h) kernels:
 * WB_PACK_X_SPARSE_VNNI, wb_quant_pack_sparse_vnni. */
#ifndef WB_SPARSE_PACK_H
#define WB_SPARSE_PACK_H

#include "wb_int8_sparse_avx2.h"
#include "wb_quant.h"

static void wb_pack_x_sparse_u8_g_chunk(void *p, long b, long e) {
    const wb_pack_job_t *j = (const wb_pack_job_t *)p;
    const int MT = 16 * j->G, Kb = j->Kb;
    for (long mb = b; mb < e; mb++) {
        uint8_t *o = (uint8_t *)j->out + (size_t)mb * Kb * MT * 4;
        for (int r = 0; r < MT; r++) {
            int m = (int)mb * MT + r;
            if (m < j->M) {
                const uint8_t *a = j->xq + (size_t)m * j->Kp;
                for (int kb = 0; kb < Kb; kb++) memcpy(o + ((size_t)kb * MT + r) * 4, a + 4 * (size_t)kb, 4);
            } else {
                for (int kb = 0; kb < Kb; kb++) memset(o + ((size_t)kb * MT + r) * 4, 0, 4);
            }
        }
    }
}

static void wb_pack_x_sparse_u8_g(const uint8_t *xq, int M, int Kp, int Kb, int G, uint8_t *out, int nt) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT;
    wb_pack_job_t job = {xq, M, Kp, Kb, G, out};
    wb_parallel_for((long)M * Kb > 16384 ? nt : 1, MB, wb_grain(MB, nt, 2), wb_pack_x_sparse_u8_g_chunk, &job);
}

/* the original 16-row layout (G = 1), kept for callers of the old API */
static void wb_pack_x_sparse_u8(const uint8_t *xq, int M, int Kp, int Kb, uint8_t *out, int nt) {
    wb_pack_x_sparse_u8_g(xq, M, Kp, Kb, 1, out, nt);
}
#ifndef WB_EMULATE_ISA   /* testing/emulate_isa.c stands in its own __m512i: not for this code */
/* wb_pack_x_sparse_u8_g with 16 x 16 transposes of 4-byte groups: xt32[kb][r] = xq32[r][kb]
 * (the scalar version stores 4 bytes at a 64*G-byte stride, one cache line per store). */
WB_AVX512F static void wb_pack_x_sparse_u8_g_avx512_chunk(void *p, long tb, long te) {
    const wb_pack_job_t *j = (const wb_pack_job_t *)p;
    const int G = j->G, MT = 16 * G, M = j->M, Kb = j->Kb, Kp = j->Kp;
    const uint8_t *xq = j->xq;
    for (long t = tb; t < te; t++) {
        const int mb = (int)(t / G), g = (int)(t % G);
        const int r0 = mb * MT + 16 * g;             /* first row of this group */
        int32_t *o = (int32_t *)((uint8_t *)j->out + (size_t)mb * Kb * MT * 4) + 16 * g;
        const int rows = M - r0 < 16 ? (M - r0 > 0 ? M - r0 : 0) : 16;
        int kb = 0;
        for (; kb + 16 <= Kb; kb += 16) {
            __m512 R[16];
            #pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                R[i] = i < rows ? _mm512_loadu_ps((const float *)(xq + (size_t)(r0 + i) * Kp + 4 * (size_t)kb))
                                : _mm512_setzero_ps();
            wb_transpose16(R);
            #pragma GCC unroll 16
            for (int i = 0; i < 16; i++) _mm512_storeu_ps((float *)(o + (size_t)(kb + i) * MT), R[i]);
        }
        for (; kb < Kb; kb++)
            for (int i = 0; i < 16; i++) {
                int32_t v = 0;
                if (i < rows) memcpy(&v, xq + (size_t)(r0 + i) * Kp + 4 * (size_t)kb, 4);
                o[(size_t)kb * MT + i] = v;
            }
    }
}

static void wb_pack_x_sparse_u8_g_avx512(const uint8_t *xq, int M, int Kp, int Kb, int G, uint8_t *out, int nt) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT;
    const long groups = (long)MB * G;               /* 16-row groups */
    wb_pack_job_t job = {xq, M, Kp, Kb, G, out};
    wb_parallel_for((long)M * Kb > 16384 ? nt : 1, groups, wb_grain(groups, nt, 2), wb_pack_x_sparse_u8_g_avx512_chunk, &job);
}

#define WB_PACK_X_SPARSE_VNNI wb_pack_x_sparse_u8_g_avx512

/* Per-token quantization and the tile packing in one parallel job: item t quantizes rows
 * 16t..16t+15 of x into xq (wb_quant_row, so the same bytes, scales and zero points as
 * wb_quantize_rows) and packs that 16-row group into xt at once (wb_pack_x_sparse_u8_g_avx512's
 * item t), while the rows are in this thread's cache. Two jobs, one after the other, paid a
 * second fork and join per layer, and the packing thread read rows the other one had written. */
typedef struct { wb_pack_job_t pack; const float *x; int K; float *scale; int32_t *zp; int isa; float qmax; } wb_quant_pack_job_t;

static void wb_quant_pack_sparse_vnni_chunk(void *p, long tb, long te) {
    const wb_quant_pack_job_t *j = (const wb_quant_pack_job_t *)p;
    const int M = j->pack.M, Kp = j->pack.Kp;
    uint8_t *xq = (uint8_t *)j->pack.xq;   /* this job's own rows: it writes them */
    for (long t = tb; t < te; t++) {
        const int r1 = wb_imin((int)t * 16 + 16, M);
        for (int m = (int)t * 16; m < r1; m++)
            wb_quant_row(j->isa, j->x + (size_t)m * j->K, j->K, Kp, j->qmax, xq + (size_t)m * Kp, j->scale + m, j->zp + m);
        wb_pack_x_sparse_u8_g_avx512_chunk((void *)&j->pack, t, t + 1);
    }
}

/* x float32[M][K] -> xq uint8[M][Kp] (scratch rows for the packing), scale / zp per row, and xt
 * packed as WB_PACK_X_SPARSE_VNNI packs xq with groups G; qmax 255 or 127 as wb_quantize_rows.
 * Threads as wb_quantize_rows chooses them (wb_quant_threads). */
static void wb_quant_pack_sparse_vnni(const float *x, int M, int K, int Kp, int Kb, int G, uint8_t *xq,
                                      float *scale, int32_t *zp, uint8_t *xt, int isa, int nt, int qmax) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT;
    const long groups = (long)MB * G;               /* 16-row groups */
    nt = wb_threads(nt);
    wb_quant_pack_job_t job = {{xq, M, Kp, Kb, G, xt}, x, K, scale, zp, isa, (float)qmax};
    wb_parallel_for(wb_quant_threads(M, K, nt), groups, wb_grain(groups, nt, 2), wb_quant_pack_sparse_vnni_chunk, &job);
}
#else   /* the emulation runs where AVX-512 may be missing */
#define WB_PACK_X_SPARSE_VNNI wb_pack_x_sparse_u8_g
#endif

#endif
