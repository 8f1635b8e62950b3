/* TDPBUSD time against its tile shapes: K (A's bytes per row = B's rows x 4) and M (rows of A and C).
 * Four independent accumulators, operands in registers. Build: gcc -O2 -mamx-tile -mamx-int8 tile_k.c */
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#define ITER 200000
typedef struct { uint8_t palette, start; uint8_t res[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg_t;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static double run(int M, int K) {
    cfg_t c; memset(&c, 0, sizeof c); c.palette = 1;
    for (int i = 0; i < 4; i++) { c.rows[i] = M; c.colsb[i] = 64; }   /* C: M x 16 int32 */
    c.rows[4] = M; c.colsb[4] = K;                                     /* A: M x K bytes */
    c.rows[6] = K / 4; c.colsb[6] = 64;                                /* B: K/4 x 16 x 4 */
    _tile_loadconfig(&c);
    static uint8_t buf[4096] __attribute__((aligned(64)));
    _tile_loadd(4, buf, 64); _tile_loadd(6, buf, 64);
    for (int i = 0; i < 4; i++) { _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3); }
    double best = 1e9;
    for (int r = 0; r < 7; r++) {
        double t = now();
        for (int i = 0; i < ITER; i++) { _tile_dpbusd(0, 4, 6); _tile_dpbusd(1, 4, 6); _tile_dpbusd(2, 4, 6); _tile_dpbusd(3, 4, 6); }
        t = (now() - t) / (4.0 * ITER);
        if (t < best) best = t;
    }
    _tile_release();
    return best * 1e9;
}
int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { perror("arch_prctl"); return 1; }
    int Ms[] = {16, 8, 4}, Ks[] = {64, 32, 16, 4};
    double base = run(16, 64);
    printf("ns per TDPBUSD (best of 7 x %d x 4), and relative to M=16 K=64 (%.2f ns)\n", ITER, base);
    for (int a = 0; a < 3; a++) for (int b = 0; b < 4; b++) {
        double t = run(Ms[a], Ks[b]);
        printf("M=%2d K=%2d: %.2f ns  %.2fx  MACs per ns %.0f\n", Ms[a], Ks[b], t, t / base, Ms[a] * 16.0 * Ks[b] / t);
    }
    return 0;
}
