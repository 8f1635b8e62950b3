/* Does a TILELOADD into a tile that an earlier TDPBUSD still reads wait for it (no renaming of
 * tile registers)?  One thread; each iteration loads 4 A tiles (the B tile stays put) and runs 4
 * TDPBUSDs into 4 accumulators; the loads go either all into tmm4 or alternate tmm4 / tmm5, from
 * a span in L1 or L2. Times in TDPBUSD slots (the dp-only loop's time per TDPBUSD).
 * Build: gcc -O2 -mamx-tile -mamx-int8 renaming.c -o /tmp/renaming */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ITER 20000
typedef struct { uint8_t palette, start; uint8_t res[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg_t;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static uint8_t *A;
static size_t span;

static void dp_only(void) {
    for (int i = 0; i < ITER; i++) { _tile_dpbusd(0, 4, 6); _tile_dpbusd(1, 4, 6); _tile_dpbusd(2, 4, 6); _tile_dpbusd(3, 4, 6); }
}
static void one_reg(void) {
    size_t o = 0;
    for (int i = 0; i < ITER; i++) {
        _tile_loadd(4, A + o, 64); _tile_dpbusd(0, 4, 6);
        _tile_loadd(4, A + o + 1024, 64); _tile_dpbusd(1, 4, 6);
        _tile_loadd(4, A + o + 2048, 64); _tile_dpbusd(2, 4, 6);
        _tile_loadd(4, A + o + 3072, 64); _tile_dpbusd(3, 4, 6);
        o += 4096; if (o >= span) o = 0;
    }
}
static void two_regs(void) {
    size_t o = 0;
    for (int i = 0; i < ITER; i++) {
        _tile_loadd(4, A + o, 64); _tile_dpbusd(0, 4, 6);
        _tile_loadd(5, A + o + 1024, 64); _tile_dpbusd(1, 5, 6);
        _tile_loadd(4, A + o + 2048, 64); _tile_dpbusd(2, 4, 6);
        _tile_loadd(5, A + o + 3072, 64); _tile_dpbusd(3, 5, 6);
        o += 4096; if (o >= span) o = 0;
    }
}
static void four_regs(void) {   /* tmm4, 5, 7, 3: no register reused within an iteration */
    size_t o = 0;
    for (int i = 0; i < ITER; i++) {
        _tile_loadd(4, A + o, 64); _tile_dpbusd(0, 4, 6);
        _tile_loadd(5, A + o + 1024, 64); _tile_dpbusd(1, 5, 6);
        _tile_loadd(7, A + o + 2048, 64); _tile_dpbusd(2, 7, 6);
        _tile_loadd(3, A + o + 3072, 64); _tile_dpbusd(0, 3, 6);   /* 3 is also no accumulator here */
        o += 4096; if (o >= span) o = 0;
    }
}

int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { perror("arch_prctl"); return 1; }
    cfg_t c; memset(&c, 0, sizeof c); c.palette = 1;
    for (int i = 0; i < 8; i++) { c.rows[i] = 16; c.colsb[i] = 64; }
    _tile_loadconfig(&c);
    A = aligned_alloc(4096, 4 << 20); memset(A, 1, 4 << 20);
    _tile_loadd(4, A, 64); _tile_loadd(5, A, 64); _tile_loadd(6, A, 64); _tile_loadd(7, A, 64); _tile_loadd(3, A, 64);
    double slot = 1e9;
    for (int r = 0; r < 5; r++) { double t = now(); dp_only(); t = now() - t; if (t / (4.0 * ITER) < slot) slot = t / (4.0 * ITER); }
    printf("TDPBUSD slot %.2f ns\n", slot * 1e9);
    const size_t spans[] = {16 << 10, 512 << 10, 8 << 20};
    const char *where[] = {"16 KB (L1)", "512 KB (L2)", "4 MB (L3)"};
    struct { const char *n; void (*f)(void); } cs[] = {{"A loads all into tmm4", one_reg}, {"alternating tmm4 / tmm5", two_regs},
                                                     {"four registers", four_regs}};
    for (int s = 0; s < 3; s++) {
        span = spans[s] > (4u << 20) ? 4u << 20 : spans[s];
        for (int k = 0; k < 3; k++) {
            double best = 1e9;
            for (int r = 0; r < 5; r++) { double t = now(); cs[k].f(); t = now() - t; if (t < best) best = t; }
            printf("%-12s %-26s %5.2f slots per load + TDPBUSD\n", where[s], cs[k].n, best / ITER / 4 / slot);
        }
    }
    _tile_release();
    return 0;
}
