/* The dense AMX kernel's K loop and item order, without its epilogue, on one thread at one
 * thread's share of 128 x 768 x 3072 (N = 1536): how close the loop alone comes to the tile
 * unit's rate, with A read where the kernel reads it (xq's rows, 768 bytes apart) or from a
 * tile-ordered copy, and B from the packed panels. Times are in "TDPBUSD slots" (the time of
 * one TDPBUSD in a dp-only loop), so the clock the core drops to under AMX does not matter.
 * Build: gcc -O2 -mamx-tile -mamx-int8 -mavx512f kernel_loop.c -o /tmp/kernel_loop */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct { uint8_t palette, start; uint8_t res[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg_t;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

enum { M = 128, K = 768, N = 1536, CH = K / 64, MB = M / 32, NP2 = N / 32 };
static uint8_t *xq, *xt;     /* A rows; A in tile order */
static int8_t *Bp;           /* N / 16 panels of K / 4 x 64 bytes */
static int32_t C[32 * 32] __attribute__((aligned(64)));

static void run(int tile_order, int prefetch_a, int rows_outer) {
    const size_t panel = (size_t)(K / 4) * 64;
    for (int t = 0; t < NP2 * MB; t++) {
        const int mb = rows_outer ? t / NP2 : t % MB, p2 = rows_outer ? t % NP2 : t / MB;
        const uint8_t *A0 = tile_order ? xt + (size_t)(mb * 2) * CH * 1024 : xq + (size_t)mb * 32 * K;
        const uint8_t *A1 = tile_order ? A0 + (size_t)CH * 1024 : A0 + (size_t)16 * K;
        const size_t as = tile_order ? 1024 : 64, ar = tile_order ? 64 : K;
        const int8_t *B0 = Bp + (size_t)(2 * p2) * panel, *B1 = B0 + panel;
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int c = 0; c < CH; c++) {
            if (prefetch_a && c + 2 < CH)
                for (int r = 0; r < 16; r++) {
                    _mm_prefetch((const char *)A0 + (c + 2) * as + r * ar, _MM_HINT_T0);
                    _mm_prefetch((const char *)A1 + (c + 2) * as + r * ar, _MM_HINT_T0);
                }
            _tile_loadd(4, A0 + c * as, ar);
            _tile_loadd(6, B0 + (size_t)c * 1024, 64);
            _tile_dpbusd(0, 4, 6);
            _tile_loadd(7, B1 + (size_t)c * 1024, 64);
            _tile_dpbusd(1, 4, 7);
            _tile_loadd(5, A1 + c * as, ar);
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
        }
        _tile_stored(0, C, 128); _tile_stored(1, C + 16, 128);
        _tile_stored(2, C + 512, 128); _tile_stored(3, C + 528, 128);
    }
}

static void dp_only(int n) {
    for (int i = 0; i < n; i++) {
        _tile_dpbusd(0, 4, 6); _tile_dpbusd(1, 4, 7); _tile_dpbusd(2, 5, 6); _tile_dpbusd(3, 5, 7);
    }
}

int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { perror("arch_prctl"); return 1; }
    cfg_t c; memset(&c, 0, sizeof c); c.palette = 1;
    for (int i = 0; i < 8; i++) { c.rows[i] = 16; c.colsb[i] = 64; }
    _tile_loadconfig(&c);
    xq = aligned_alloc(4096, M * K); xt = aligned_alloc(4096, M * K); Bp = aligned_alloc(4096, (size_t)N * K);
    memset(xq, 1, M * K); memset(xt, 1, M * K); memset(Bp, 1, (size_t)N * K);
    _tile_loadd(4, xq, 64); _tile_loadd(5, xq, 64); _tile_loadd(6, xq, 64); _tile_loadd(7, xq, 64);
    double slot = 1e9;
    for (int r = 0; r < 5; r++) { double t = now(); dp_only(10000); t = now() - t; if (t / 40000 < slot) slot = t / 40000; }
    printf("one TDPBUSD slot: %.2f ns (%.2f GHz if 16 cycles)\n", slot * 1e9, 16 / slot / 1e9);
    const struct { const char *name; int to, pf, ro; } v[] = {
        {"kernel: A rows, A prefetched 2 ahead, pairs outer", 0, 1, 0},
        {"A rows, no prefetch, pairs outer", 0, 0, 0},
        {"A in tile order, prefetched, pairs outer", 1, 1, 0},
        {"A in tile order, no prefetch, pairs outer", 1, 0, 0},
        {"A rows, prefetched, row blocks outer (B from L2)", 0, 1, 1},
        {"A in tile order, no prefetch, row blocks outer", 1, 0, 1}};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        double best = 1e9;
        for (int r = 0; r < 7; r++) { double t = now(); run(v[i].to, v[i].pf, v[i].ro); t = now() - t; if (t < best) best = t; }
        const double items = NP2 * MB, per_item = best / items / slot;
        printf("%-52s %6.1f slots an item (48 TDPBUSD: %3.0f %%), %.1f us a call\n", v[i].name, per_item,
               100 * 48 / per_item, best * 1e6);
    }
    _tile_release();
    return 0;
}
