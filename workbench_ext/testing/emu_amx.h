/* Scalar emulation of the AMX intrinsics the kernels use (_tile_*: TDPBUSD, TDPBF16PS), following
 * the Intel SDM pseudo-code, including the tile configuration's rows / colsb; shape errors are
 * counted in emu_errors. Included by the emulation tests (emulate_isa.c, emulate_attn_amx.c)
 * before the kernel headers. */
#ifndef WB_EMU_AMX_H
#define WB_EMU_AMX_H

#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- AMX emulation: 8 tiles of 16 rows x 64 bytes, shaped by the loaded config ---- */
static _Thread_local uint8_t emu_tiles[8][16][64];
static _Thread_local int emu_rows[8], emu_colsb[8], emu_configured;
static int emu_errors;
static void emu_loadconfig(const void *cfg) {
    const uint8_t *c = (const uint8_t *)cfg;
    if (c[0] != 1) { emu_errors++; fprintf(stderr, "palette %d != 1\n", c[0]); }
    for (int t = 0; t < 8; t++) {
        uint16_t cb; memcpy(&cb, c + 16 + 2 * t, 2);
        emu_colsb[t] = cb; emu_rows[t] = c[48 + t];
        if (cb > 64 || c[48 + t] > 16) { emu_errors++; fprintf(stderr, "bad tile %d shape\n", t); }
    }
    emu_configured = 1;
}
static void emu_check(int t) { if (!emu_configured || emu_rows[t] == 0) { emu_errors++; fprintf(stderr, "tile %d unconfigured\n", t); } }
static void emu_tile_loadd(int t, const void *base, long stride) {
    emu_check(t);
    for (int r = 0; r < emu_rows[t]; r++) memcpy(emu_tiles[t][r], (const uint8_t *)base + r * stride, emu_colsb[t]);
}
static void emu_tile_stored(int t, void *base, long stride) {
    emu_check(t);
    for (int r = 0; r < emu_rows[t]; r++) memcpy((uint8_t *)base + r * stride, emu_tiles[t][r], emu_colsb[t]);
}
static void emu_tile_zero(int t) { emu_check(t); memset(emu_tiles[t], 0, sizeof emu_tiles[t]); }
static void emu_tile_dpbusd(int c, int a, int b) {   /* SDM TDPBUSD: c += a(u8) . b(s8) */
    emu_check(c); emu_check(a); emu_check(b);
    if (emu_colsb[a] / 4 != emu_rows[b] || emu_rows[c] != emu_rows[a] || emu_colsb[c] != emu_colsb[b]) {
        emu_errors++; fprintf(stderr, "TDPBUSD shape mismatch\n");
    }
    for (int m = 0; m < emu_rows[c]; m++)
        for (int k = 0; k < emu_colsb[a] / 4; k++)
            for (int n = 0; n < emu_colsb[c] / 4; n++) {
                int32_t acc; memcpy(&acc, &emu_tiles[c][m][4 * n], 4);
                for (int t = 0; t < 4; t++)
                    acc += (int32_t)emu_tiles[a][m][4 * k + t] * (int32_t)(int8_t)emu_tiles[b][k][4 * n + t];
                memcpy(&emu_tiles[c][m][4 * n], &acc, 4);
            }
}
static float emu_bf16(const uint8_t *p) { uint32_t u = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 24; float f; memcpy(&f, &u, 4); return f; }
static void emu_tile_dpbf16ps(int c, int a, int b) {   /* SDM TDPBF16PS: c(fp32) += a(bf16 pairs) . b */
    emu_check(c); emu_check(a); emu_check(b);
    if (emu_colsb[a] / 4 != emu_rows[b] || emu_rows[c] != emu_rows[a] || emu_colsb[c] != emu_colsb[b]) {
        emu_errors++; fprintf(stderr, "TDPBF16PS shape mismatch\n");
    }
    for (int m = 0; m < emu_rows[c]; m++)
        for (int k = 0; k < emu_colsb[a] / 4; k++)
            for (int n = 0; n < emu_colsb[c] / 4; n++) {
                float acc; memcpy(&acc, &emu_tiles[c][m][4 * n], 4);
                acc += emu_bf16(&emu_tiles[a][m][4 * k]) * emu_bf16(&emu_tiles[b][k][4 * n]);
                acc += emu_bf16(&emu_tiles[a][m][4 * k + 2]) * emu_bf16(&emu_tiles[b][k][4 * n + 2]);
                memcpy(&emu_tiles[c][m][4 * n], &acc, 4);
            }
}
static void emu_release(void) { emu_configured = 0; memset(emu_rows, 0, sizeof emu_rows); }
#undef _tile_loadconfig
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbusd
#undef _tile_release
#undef _tile_dpbf16ps
#define _tile_loadconfig(p) emu_loadconfig(p)
#define _tile_loadd(t, b, s) emu_tile_loadd(t, b, s)
#define _tile_stored(t, b, s) emu_tile_stored(t, b, s)
#define _tile_zero(t) emu_tile_zero(t)
#define _tile_dpbusd(c, a, b) emu_tile_dpbusd(c, a, b)
#define _tile_release() emu_release()
#define _tile_dpbf16ps(c, a, b) emu_tile_dpbf16ps(c, a, b)

#define WB_AMX
#define WB_AMX_BF16

#endif
