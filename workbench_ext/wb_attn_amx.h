/* The two products of bf16 attention on AMX tiles (TDPBF16PS: a 16 x 32 bf16 tile times a
 * 32 x 16 one into 16 x 16 fp32 sums, 8192 multiply-adds per instruction), for 16 query rows at
 * a time, on the packed operands of wb_attn_bf16.h (the pair layouts are the tiles' own):
 *
 *   scores  P[16][Sp]  = Qb[16][d2p] (rows: pairs of head_dim)  x Kb[d2p][Sp] (rows: one pair
 *                        of head_dim for every key)
 *   context C[16][dp]  = Pb[16][S2p] (rows: pairs of keys)      x Vb[S2p][dp] (rows: one pair of
 *                        keys for every head_dim column)
 *
 * d2p and S2p are whole tiles (16 pairs); the caller zero-pads Qb / Kb past head_dim and Pb / Vb
 * past the keys, so padding adds zeros. Only _tile_* intrinsics here: testing/emulate_isa.c
 * checks these two functions against a scalar reference on any machine; the caller (softmax,
 * conversions) runs on AVX512-BF16, which every AMX CPU has. On a borrowed Emerald Rapids
 * (results/bench/emr-amx/) its tests passed and a batch-1 DistilBERT forward ran 1.06-1.08x
 * faster with it than with fp32 attention; on a Sapphire Rapids-class development machine
 * (results/bench/spr-amx/) the kernel ran 1.7x the fp32 one on 2 threads.
 */
#ifndef WB_ATTN_AMX_H
#define WB_ATTN_AMX_H

#include <cpuid.h>
#include "wb_amx_tiles.h"

#ifndef WB_AMX_BF16
#define WB_AMX_BF16 __attribute__((target("amx-tile,amx-bf16")))
#endif

/* CPUID.(EAX=7,ECX=0):EDX[22]; the OS state and the tile-data permission are what the ISA check
 * (workbench_ext.cpu) found for its "amx" path */
static int wb_cpu_has_amx_bf16(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (d >> 22) & 1;
}

WB_AMX_BF16 static void wb_attn_amx_begin(void) { wb_amx_config(); }
WB_AMX_BF16 static void wb_attn_amx_end(void) { _tile_release(); }

/* P[16][nk * 16] (row stride ldp floats) for the keys 0 .. 16 nk - 1 of Kb (row stride Sp words):
 * per block of 16 keys, tile 0 sums the head_dim chunks, A = Qb chunk (tile 1), B = Kb (tile 2) */
WB_AMX_BF16 static void wb_attn_amx_scores(const uint32_t *Qb, int d2p, const uint32_t *Kb, long Sp, int nk,
                                           float *P, long ldp) {
    for (int jb = 0; jb < nk; jb++) {
        _tile_zero(0);
        for (int t0 = 0; t0 < d2p; t0 += 16) {
            _tile_loadd(1, Qb + t0, (long)d2p * 4);
            _tile_loadd(2, Kb + (size_t)t0 * Sp + (size_t)jb * 16, Sp * 4);
            _tile_dpbf16ps(0, 1, 2);
        }
        _tile_stored(0, P + (size_t)jb * 16, ldp * 4);
    }
}

/* C[16][dp] (row stride dp floats) = Pb[16][S2p] (row stride ldpb words) x Vb[S2p][dp] */
WB_AMX_BF16 static void wb_attn_amx_context(const uint32_t *Pb, long ldpb, int S2p, const uint32_t *Vb, int dp,
                                            float *C) {
    for (int d0 = 0; d0 < dp; d0 += 16) {
        _tile_zero(0);
        for (int u0 = 0; u0 < S2p; u0 += 16) {
            _tile_loadd(1, Pb + u0, ldpb * 4);
            _tile_loadd(2, Vb + (size_t)u0 * dp + d0, (long)dp * 4);
            _tile_dpbf16ps(0, 1, 2);
        }
        _tile_stored(0, C + d0, (long)dp * 4);
    }
}

#endif
