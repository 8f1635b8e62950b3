/* Logic test of the whole AMX path of bf16 attention (wb_attn_bf16.h with amx = 1: 16-row
 * blocks, operands zero-padded to whole tiles, tile configuration per chunk) on machines
 * without AMX: the tile intrinsics are emulated (emu_amx.h), the rest (conversions, softmax)
 * runs natively on AVX512-BF16. Its outputs must match the AVX512-BF16 path's -- the same bf16
 * operands, only the order of the fp32 sums differs -- on odd shapes, padding, [CLS]-only rows
 * and token-dropping significance. Prints "OK", "FAIL", or "SKIP" (no AVX512-BF16 here).
 * Run by tests/test_attention_bf16.py (gcc -O1 -fopenmp ... && ./a.out). */
#define _GNU_SOURCE   /* sched_getcpu and the CPU-set calls of wb_pool_impl.h */
#include <math.h>
#include <stdlib.h>
#include "emu_amx.h"
#include "wb_attn.h"
#include "wb_pool_impl.h"   /* the parallel loops run on the real pool: chunks on 2 threads */

static uint32_t rng_state = 777;
static float rnd_normalish(void) {
    float s = 0;
    for (int i = 0; i < 4; i++) { rng_state = rng_state * 1664525u + 1013904223u; s += (float)(rng_state >> 8) / 16777216.0f; }
    return (s - 2.0f) * 1.7f;
}

/* ctx (and sig when R == S) of every (batch, head) pair on the path `bf16` (1: AVX512-BF16, 2: AMX) */
static void run(const wb_attn_t *proto, int bf16, int nt, float *ctx, float *sig) {
    wb_attn_t a = *proto;
    a.ctx = ctx;
    a.sig = sig;
    a.precision = WB_ATTN_BF16;
    wb_attn_job_t job = {&a, WB_ISA_AVX512_VNNI, bf16, 0, 0};
    wb_parallel_for(nt, (long)a.B * a.nh, 1, wb_attn_chunk, &job);
    if (atomic_load(&job.failed)) { fprintf(stderr, "scratch allocation failed\n"); exit(2); }
}

static int run_case(int B, int nh, int S, int d, int R, int nt) {
    const int W = 3 * nh * d;
    float *qkv = malloc(sizeof(float) * (size_t)B * S * W), *mask = calloc((size_t)B * S, sizeof(float));
    for (long i = 0; i < (long)B * S * W; i++) qkv[i] = rnd_normalish() * (i % 3 == 0 ? 0.3f : 1.0f);
    if (B > 1)   /* padding in the last row (a one-row batch keeps every key) */
        for (int j = S / 2 + 1; j < S; j++) mask[(size_t)(B - 1) * S + j] = -3.4e38f;
    wb_attn_t a;
    memset(&a, 0, sizeof a);
    a.q = qkv; a.qb = (long)S * W; a.qh = d; a.qr = W;          /* the engine's fused QKV rows */
    a.k = qkv + nh * d; a.kb = (long)S * W; a.kh = d; a.kd = 1; a.ks = W;
    a.v = qkv + 2 * nh * d; a.vb = (long)S * W; a.vh = d; a.vs = W;
    a.mask = mask; a.B = B; a.nh = nh; a.R = R; a.S = S; a.d = d;
    const size_t nc = (size_t)B * R * nh * d, ns = (size_t)B * nh * S;
    float *c1 = malloc(sizeof(float) * nc), *c2 = malloc(sizeof(float) * nc);
    float *s1 = R == S ? malloc(sizeof(float) * ns) : NULL, *s2 = R == S ? malloc(sizeof(float) * ns) : NULL;
    run(&a, 1, nt, c1, s1);
    run(&a, 2, nt, c2, s2);
    /* the same bf16 operands; the fp32 sums differ in order (VDPBF16PS chains against the
     * emulated tile sums), which can round a softmax weight to the neighbouring bf16 (2^-8 of
     * itself): a few outputs move by up to ~1e-3. A wrong layout or padding moves most of them
     * by the outputs' own size (~1). */
    int bad = 0, moved = 0;
    double worst = 0;
    for (size_t i = 0; i < nc; i++) {
        const double e = fabs((double)c1[i] - c2[i]);
        if (!(e <= 2e-3)) bad = 1;
        moved += e > 1e-5;
        if (e > worst) worst = e;
    }
    if (moved > (long)nc / 10 + 8) bad = 1;
    for (size_t i = 0; s1 && i < ns; i++)
        if (!(fabs((double)s1[i] - s2[i]) <= 1e-4 * (1 + fabs((double)s1[i])))) bad = 1;
    if (bad) fprintf(stderr, "B=%d nh=%d S=%d d=%d R=%d nt=%d: AMX path differs (worst %.3g, %d of %zu moved)\n", B, nh, S, d, R, nt, worst, moved, nc);
    free(qkv); free(mask); free(c1); free(c2); free(s1); free(s2);
    return bad;
}

int main(void) {
    if (!wb_cpu_has_avx512_bf16()) { puts("SKIP"); return 0; }
    wb_pool_run = wb_pool_run_impl;
    static const int shapes[][5] = {{1, 12, 128, 64, 128}, {2, 3, 37, 33, 37}, {1, 2, 5, 7, 1},
                                    {3, 4, 70, 64, 1}, {1, 1, 129, 80, 129}, {2, 2, 20, 16, 20}};
    int bad = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int nt = 1; nt <= 2; nt++)
            bad |= run_case(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4], nt);
    if (emu_errors) { fprintf(stderr, "%d AMX emulation errors\n", emu_errors); bad = 1; }
    puts(bad ? "FAIL" : "OK");
    return bad;
}
