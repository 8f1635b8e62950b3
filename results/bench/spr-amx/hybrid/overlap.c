/* Can one core run the dense AMX loop and the 1x4 sparse VNNI loop at the same time?  The tile
 * unit and the AVX-512 ports are separate, so a 90 %-sparse layer could give some of its columns
 * to AMX as dense tiles (zeros included) and the rest to the VNNI kernel, one instruction stream
 * interleaving both.  One thread, DistilBERT's FFN input shape per thread (128 x 768, N = 1536):
 *   amx      the AMX kernel's K loop (2x2 tiles, A from xq's rows in L2, B panels) over P pairs
 *   vnni     the 1x4 kernel's loop (64-row tiles, 2 columns at a time, ~10 % of K's 192 blocks
 *            per column at random) over Q column pairs x 2 row tiles
 *   both     the same work, one VNNI column pair after each AMX chunk's 4 TDPBUSDs
 * No epilogues (sums stored). Best of 9, in us. Last, the same with the AMX part's tile loads left
 * out (its TDPBUSDs multiply the tiles as they are), to see which part of it contends.
 * Build: gcc -O2 -mamx-tile -mamx-int8 -mavx512f -mavx512bw -mavx512vnni overlap.c -o /tmp/overlap */
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

enum { M = 128, K = 768, KB = K / 4, CH = K / 64, MB = M / 32, NNZ = 19 };
static uint8_t *xq, *Xt;          /* rows for AMX; 2 x (64-row tiles, KB blocks x 256 bytes) for VNNI */
static int8_t *Bp;
static int32_t *cols;             /* per sparse column: NNZ block indices */
static int8_t *vals;
static int32_t C[32 * 32] __attribute__((aligned(64)));
static int32_t Cv[2 * 64] __attribute__((aligned(64)));

static inline void vnni_pair(int q) {   /* columns 2q, 2q+1 on row tile q & 1 */
    const uint8_t *X = Xt + (size_t)(q & 1) * KB * 256;
    const int32_t *c0 = cols + (size_t)(2 * q) * NNZ, *c1 = c0 + NNZ;
    const int8_t *v0 = vals + (size_t)(2 * q) * NNZ * 4, *v1 = v0 + NNZ * 4;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    for (int i = 0; i < NNZ; i++) {
        int32_t w; memcpy(&w, v0 + 4 * i, 4);
        __m512i wv = _mm512_set1_epi32(w);
        const uint8_t *x = X + (size_t)c0[i] * 256;
        a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(x), wv);
        a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(x + 64), wv);
        a2 = _mm512_dpbusd_epi32(a2, _mm512_loadu_si512(x + 128), wv);
        a3 = _mm512_dpbusd_epi32(a3, _mm512_loadu_si512(x + 192), wv);
        memcpy(&w, v1 + 4 * i, 4);
        wv = _mm512_set1_epi32(w);
        x = X + (size_t)c1[i] * 256;
        e0 = _mm512_dpbusd_epi32(e0, _mm512_loadu_si512(x), wv);
        e1 = _mm512_dpbusd_epi32(e1, _mm512_loadu_si512(x + 64), wv);
        e2 = _mm512_dpbusd_epi32(e2, _mm512_loadu_si512(x + 128), wv);
        e3 = _mm512_dpbusd_epi32(e3, _mm512_loadu_si512(x + 192), wv);
    }
    _mm512_store_si512(Cv, _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)));
    _mm512_store_si512(Cv + 16, _mm512_add_epi32(_mm512_add_epi32(e0, e1), _mm512_add_epi32(e2, e3)));
    __asm__ volatile("" : : "r"(Cv) : "memory");   /* the sums count: keep the loop */
}

/* P panel pairs x MB row blocks of AMX; Q VNNI column pairs spread one per chunk (both > 0) */
static int amx_loads = 1;   /* 0: the TDPBUSDs only (operand tiles as loaded before): which part contends */
static void run(int P, int Q) {
    const size_t panel = (size_t)KB * 64;
    int q = 0;
    for (int t = 0; t < P * MB; t++) {
        const int mb = t % MB, p2 = t / MB;
        const uint8_t *A0 = xq + (size_t)mb * 32 * K, *A1 = A0 + (size_t)16 * K;
        const int8_t *B0 = Bp + (size_t)(2 * p2) * panel, *B1 = B0 + panel;
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int c = 0; c < CH; c++) {
            if (amx_loads) _tile_loadd(4, A0 + c * 64, K);
            if (amx_loads) _tile_loadd(6, B0 + (size_t)c * 1024, 64);
            _tile_dpbusd(0, 4, 6);
            if (amx_loads) _tile_loadd(7, B1 + (size_t)c * 1024, 64);
            _tile_dpbusd(1, 4, 7);
            if (amx_loads) _tile_loadd(5, A1 + c * 64, K);
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
            if (q < Q) vnni_pair(q++);
        }
        _tile_stored(0, C, 128); _tile_stored(1, C + 16, 128);
        _tile_stored(2, C + 512, 128); _tile_stored(3, C + 528, 128);
    }
    while (q < Q) vnni_pair(q++);
}

static double best_of(int P, int Q) {
    double best = 1e9;
    for (int r = 0; r < 9; r++) { double t = now(); run(P, Q); t = now() - t; if (t < best) best = t; }
    return best * 1e6;
}

int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { perror("arch_prctl"); return 1; }
    cfg_t c; memset(&c, 0, sizeof c); c.palette = 1;
    for (int i = 0; i < 8; i++) { c.rows[i] = 16; c.colsb[i] = 64; }
    _tile_loadconfig(&c);
    const int N = 1536;
    xq = aligned_alloc(4096, M * K); Xt = aligned_alloc(4096, 2 * KB * 256); Bp = aligned_alloc(4096, (size_t)N * K);
    cols = malloc(sizeof(int32_t) * N * 2 * NNZ); vals = malloc((size_t)N * 2 * NNZ * 4);
    memset(xq, 1, M * K); memset(Xt, 1, 2 * KB * 256); memset(Bp, 1, (size_t)N * K); memset(vals, 1, (size_t)N * 2 * NNZ * 4);
    srand(3);
    for (int i = 0; i < N * 2 * NNZ; i++) cols[i] = rand() % KB;
    /* the whole FFN input layer's share of one thread: N = 1536 columns x 128 rows. Split: the
     * first f of the columns' pairs on AMX (P pairs of 32), the rest on VNNI (2 row tiles each) */
    printf("N = 1536 per thread, 128 x 768, ~10 %% blocks; us (best of 9)\n");
    const double all_amx = best_of(N / 32, 0), all_vnni = best_of(0, N);   /* N/2 pairs x 2 row tiles */
    printf("all AMX (dense tiles): %.1f   all VNNI (1x4 sparse): %.1f\n", all_amx, all_vnni);
    for (int fa = 1; fa <= 5; fa++) {       /* AMX takes fa/8 of the columns */
        const int ncol_amx = N * fa / 8, P = ncol_amx / 32, Q = (N - P * 32);  /* Q pairs = cols/2 x 2 tiles */
        const double a = best_of(P, 0), v = best_of(0, Q), both = best_of(P, Q);
        printf("AMX %4d cols + VNNI %4d cols: alone %.1f + %.1f = %.1f; interleaved %.1f (%.2fx of the sum, %.2fx faster than all VNNI)\n",
               P * 32, N - P * 32, a, v, a + v, both, both / (a + v), all_vnni / both);
    }
    amx_loads = 0;
    printf("the AMX part without its tile loads (TDPBUSDs only):\n");
    for (int fa = 2; fa <= 4; fa += 2) {
        const int P = N * fa / 8 / 32, Q = N - P * 32;
        const double a = best_of(P, 0), v = best_of(0, Q), both = best_of(P, Q);
        printf("AMX %4d cols + VNNI %4d cols: alone %.1f + %.1f = %.1f; interleaved %.1f (%.2fx of the sum)\n",
               P * 32, N - P * 32, a, v, a + v, both, both / (a + v));
    }
    _tile_release();
    return 0;
}
