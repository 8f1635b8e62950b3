/* How the tile unit overlaps TILELOADD with TDPBUSD on this core: one thread, tiles 16 x 64 B.
 * Each case runs ITER iterations of a fixed instruction pattern; the time per TDPBUSD of the
 * dp-only case (16 core cycles each, the documented throughput) calibrates the clock, so every
 * case is reported in core cycles per iteration.
 * Build: gcc -O2 -mamx-tile -mamx-int8 -mavx512f tile_loads.c -o /tmp/tile_loads && /tmp/tile_loads */
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

static uint8_t *A, *B;           /* A: up to 4 MB of tiles; B likewise */
static size_t a_span, b_span;    /* bytes cycled through (L1: 4 KB, L2: 256 KB, ...) */

/* loop bodies: each returns after ITER iterations */
static void dp_only(void) {
    for (int i = 0; i < ITER; i++) {
        _tile_dpbusd(0, 4, 6); _tile_dpbusd(1, 4, 7); _tile_dpbusd(2, 5, 6); _tile_dpbusd(3, 5, 7);
    }
}
static void loads_only_4regs(void) {     /* 4 loads into 4 registers */
    size_t o = 0;
    for (int i = 0; i < ITER; i++) {
        _tile_loadd(4, A + o, 64); _tile_loadd(6, B + o, 64); _tile_loadd(7, B + o + 1024, 64); _tile_loadd(5, A + o + 1024, 64);
        o += 2048; if (o >= a_span) o = 0;
    }
}
static void loads_only_1reg(void) {      /* 4 loads into the same register */
    size_t o = 0;
    for (int i = 0; i < ITER; i++) {
        _tile_loadd(4, A + o, 64); _tile_loadd(4, B + o, 64); _tile_loadd(4, B + o + 1024, 64); _tile_loadd(4, A + o + 1024, 64);
        o += 2048; if (o >= a_span) o = 0;
    }
}
static void k2x2(void) {                 /* the kernel's pattern: A0 B0 dp B1 dp A1 dp dp */
    size_t o = 0;
    for (int i = 0; i < ITER; i++) {
        _tile_loadd(4, A + o, 64); _tile_loadd(6, B + o, 64); _tile_dpbusd(0, 4, 6);
        _tile_loadd(7, B + o + 1024, 64); _tile_dpbusd(1, 4, 7);
        _tile_loadd(5, A + o + 1024, 64); _tile_dpbusd(2, 5, 6); _tile_dpbusd(3, 5, 7);
        o += 2048; if (o >= a_span) o = 0;
    }
}
static void k2x2_a_only(void) {          /* 2x2, only A reloaded (B stays in tmm6/7) */
    size_t o = 0;
    for (int i = 0; i < ITER; i++) {
        _tile_loadd(4, A + o, 64); _tile_dpbusd(0, 4, 6); _tile_dpbusd(1, 4, 7);
        _tile_loadd(5, A + o + 1024, 64); _tile_dpbusd(2, 5, 6); _tile_dpbusd(3, 5, 7);
        o += 2048; if (o >= a_span) o = 0;
    }
}
/* 1x3 with the A tile double-buffered: C tmm0-2, A tmm3 / tmm7 alternating, B tmm4-6 */
static void k1x3_abuf(void) {
    size_t o = 0;
    for (int i = 0; i < ITER; i += 2) {
        _tile_loadd(3, A + o, 64); _tile_loadd(4, B + o, 64); _tile_dpbusd(0, 3, 4);
        _tile_loadd(5, B + o + 1024, 64); _tile_dpbusd(1, 3, 5);
        _tile_loadd(6, B + o + 2048, 64); _tile_dpbusd(2, 3, 6);
        _tile_loadd(7, A + o + 1024, 64); _tile_loadd(4, B + o + 3072, 64); _tile_dpbusd(0, 7, 4);
        _tile_loadd(5, B + o + 4096, 64); _tile_dpbusd(1, 7, 5);
        _tile_loadd(6, B + o + 5120, 64); _tile_dpbusd(2, 7, 6);
        o += 6144; if (o + 6144 > a_span) o = 0;
    }
}

typedef struct { const char *name; void (*f)(void); double dps; } case_t;

/* The core clock as workbench_ext.cpu.measure_clock_ghz reads it: a dependent 64-bit multiply
 * chain, 3 cycles a multiply, best of 5 runs. */
static double scalar_ghz(void) {
    double best = 0;
    for (int r = 0; r < 5; r++) {
        uint64_t x = 3, c = 0x9E3779B97F4A7C15ull;
        const long n = 20000000;
        double t = now();
        for (long i = 0; i < n; i++) {
            __asm__ volatile("imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0" : "+r"(x) : "r"(c));
        }
        t = now() - t;
        const double g = 4.0 * 3 * n / t / 1e9;
        if (g > best) best = g;
        if (x == 42) printf(" ");   /* keeps x live */
    }
    return best;
}

int main(int argc, char **argv) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { perror("arch_prctl"); return 1; }
    cfg_t c; memset(&c, 0, sizeof c); c.palette = 1;
    for (int i = 0; i < 8; i++) { c.rows[i] = 16; c.colsb[i] = 64; }
    _tile_loadconfig(&c);
    A = aligned_alloc(4096, 8 << 20); B = aligned_alloc(4096, 8 << 20);
    memset(A, 1, 8 << 20); memset(B, 1, 8 << 20);
    _tile_loadd(0, A, 64); _tile_loadd(1, A, 64); _tile_loadd(2, A, 64); _tile_loadd(3, A, 64);
    _tile_loadd(4, A, 64); _tile_loadd(5, A, 64); _tile_loadd(6, A, 64); _tile_loadd(7, A, 64);
    case_t cases[] = {{"dp only (4 TDPBUSD)", dp_only, 4}, {"4 loads, 4 registers", loads_only_4regs, 0},
                      {"4 loads, 1 register", loads_only_1reg, 0}, {"2x2: 4 loads + 4 TDPBUSD", k2x2, 4},
                      {"2x2, A only reloaded: 2 loads + 4 TDPBUSD", k2x2_a_only, 4},
                      {"1x3, A double-buffered: 4 loads + 3 TDPBUSD", k1x3_abuf, 3}};
    const size_t spans[] = {8 << 10, 24 << 10, 256 << 10, 1536 << 10, 6 << 20};
    /* A and B each cycle through the span: twice it in all */
    const char *where[] = {"2 x 8 KB (L1)", "2 x 24 KB (L1)", "2 x 256 KB (L2)", "2 x 1.5 MB (L3 for both; A alone fits L2)", "2 x 6 MB (L3)"};
    double per_dp = 0;
    for (int rep = 0; rep < 3; rep++) {                    /* warm up, then calibrate */
        double t = now(); dp_only(); t = now() - t;
        if (!per_dp || t / (4.0 * ITER) < per_dp) per_dp = t / (4.0 * ITER);
    }
    printf("clock from the dp-only case: %.2f GHz (16 cycles per TDPBUSD); from a scalar multiply chain just after: %.2f GHz\n",
           16 / per_dp / 1e9, scalar_ghz());
    for (int s = 0; s < 5; s++) {
        a_span = b_span = spans[s];
        printf("operands cycled through %s:\n", where[s]);
        for (size_t k = 1; k < sizeof cases / sizeof *cases; k++) {
            double best = 1e9;
            for (int rep = 0; rep < 5; rep++) {
                double t = now(); cases[k].f(); t = now() - t;
                if (t < best) best = t;
            }
            double cyc = best / ITER / per_dp * 16;
            printf("  %-46s %7.1f cycles an iteration", cases[k].name, cyc);
            if (cases[k].dps) printf("  (TDPBUSDs alone %4.0f: %.0f %%)", 16 * cases[k].dps, 100 * 16 * cases[k].dps / cyc);
            printf("\n");
        }
    }
    _tile_release();
    return 0;
}
