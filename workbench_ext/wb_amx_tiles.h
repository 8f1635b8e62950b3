/* The AMX tile configuration every AMX kernel loads (the int8 GEMMs, the bf16 attention):
 * palette 1, all 8 tiles 16 rows x 64 bytes; kernels pad their operands to whole tiles. The
 * configuration is per thread, so each parallel chunk loads it and releases the tiles after. */
#ifndef WB_AMX_TILES_H
#define WB_AMX_TILES_H

#include "wb_common.h"

typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} wb_tilecfg_t;

WB_AMX static void wb_amx_config(void) {
    wb_tilecfg_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette_id = 1;
    for (int i = 0; i < 8; i++) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }
    /* GCC 12's LDTILECFG builtin does not tell the optimizer that it reads the 64 bytes: where
     * this function was not inlined (the bf16 attention), the stores of rows and colsb were
     * dropped as dead, and LDTILECFG of the half-written block faulted (SIGSEGV at its first
     * call on a Sapphire Rapids-class machine, gcc 12.2). The empty asm reads cfg, so every
     * store above happens first. */
    __asm__ volatile("" : : "m"(cfg) : "memory");
    _tile_loadconfig(&cfg);
}

#endif
