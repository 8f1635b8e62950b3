/* The integer products of int8 attention (wb_attn_int8.h), on AVX-512 VNNI: u8 rows times s8
 * columns packed in quads, int32 sums.  Only the integer intrinsics that
 * workbench_ext/testing/emulate_isa.c emulates are used here, so that test checks the packing
 * and indexing against a scalar sum on any CPU.
 *
 *   out[i][16 c + l] = sum_{t < n} sum_{u < 4} a[i][4 t + u] * B[t * ldb + 64 c + 4 l + u]
 *
 * for WB_ATTN_I8_MR rows i and nv vectors c of 16 columns: the scores (a = the query rows'
 * quads along head_dim, B = Kq from key j0: 16 keys' quads per 64 bytes) and the context (a = the
 * weight rows' quads along the keys, B = Vq from column d0: 16 columns' key quads per 64 bytes).
 * One VPDPBUSD chain per output vector: 64 multiply-adds per instruction, where VDPBF16PS does 32
 * and an fp32 FMA 16. */
#ifndef WB_ATTN_INT8_TILE_H
#define WB_ATTN_INT8_TILE_H

#include <stdint.h>
#include <string.h>

#define WB_ATTN_I8_MR 4   /* query rows per tile */
#define WB_ATTN_I8_NV 4   /* vectors of 16 columns per tile: 64 keys (Sp is a multiple) or head_dim columns */

WB_AVX512 static inline __attribute__((always_inline)) void
wb_attn_i8_tile(const uint8_t *const *a, const int8_t *B, size_t ldb, int n, int32_t *const *out, const int nv) {
    __m512i acc[WB_ATTN_I8_MR][WB_ATTN_I8_NV];
    for (int i = 0; i < WB_ATTN_I8_MR; i++)
        for (int c = 0; c < nv; c++) acc[i][c] = _mm512_setzero_si512();
    for (int t = 0; t < n; t++) {
        const int8_t *bt = B + (size_t)t * ldb;
        __m512i w[WB_ATTN_I8_NV];
        for (int c = 0; c < nv; c++) w[c] = _mm512_loadu_si512((const void *)(bt + 64 * c));
        for (int i = 0; i < WB_ATTN_I8_MR; i++) {
            int32_t quad;
            memcpy(&quad, a[i] + 4 * (size_t)t, 4);
            const __m512i x = _mm512_set1_epi32(quad);
            for (int c = 0; c < nv; c++) acc[i][c] = _mm512_dpbusd_epi32(acc[i][c], x, w[c]);
        }
    }
    for (int i = 0; i < WB_ATTN_I8_MR; i++)
        for (int c = 0; c < nv; c++) _mm512_storeu_si512((void *)(out[i] + 16 * c), acc[i][c]);
}

/* the tile at the widths the callers use (constant nv: the loops unroll) */
WB_AVX512 static void wb_attn_i8_tile_nv(const uint8_t *const *a, const int8_t *B, size_t ldb, int n,
                                         int32_t *const *out, int nv) {
    switch (nv) {
        case 1: wb_attn_i8_tile(a, B, ldb, n, out, 1); break;
        case 2: wb_attn_i8_tile(a, B, ldb, n, out, 2); break;
        case 3: wb_attn_i8_tile(a, B, ldb, n, out, 3); break;
        default: wb_attn_i8_tile(a, B, ldb, n, out, WB_ATTN_I8_NV); break;
    }
}

#endif
