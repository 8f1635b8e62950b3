/* CPU feature detection from CPUID + XCR0 (what the CPU has AND the OS saves), and the
 * Linux AMX tile-data permission request.  No target attributes needed: cpuid/xgetbv are
 * emitted with inline asm / <cpuid.h>.
 */
#ifndef WB_CPU_H
#define WB_CPU_H

#include <stdint.h>
#include <time.h>
#include <cpuid.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
extern long syscall(long number, ...);
#endif

enum {
    WB_F_SSE42, WB_F_AVX, WB_F_AVX2, WB_F_FMA, WB_F_F16C, WB_F_BMI2,
    WB_F_AVX512F, WB_F_AVX512BW, WB_F_AVX512DQ, WB_F_AVX512VL, WB_F_AVX512_VNNI, WB_F_AVX_VNNI,
    WB_F_AMX_TILE, WB_F_AMX_INT8, WB_F_AMX_BF16,
    WB_F_OS_AVX, WB_F_OS_AVX512, WB_F_OS_AMX, WB_F_AMX_PERMISSION,
    WB_F_COUNT
};

static uint64_t wb_xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* Ask Linux for permission to use AMX tile data in this process (needed since 5.16). */
static int wb_request_amx_permission(void) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    long r = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
    return r == 0;
#else
    return 0;
#endif
}

/* Fill f[WB_F_COUNT] with 0/1.  Instruction-set flags are reported as usable only when the OS
 * also enables the matching register state in XCR0 (and, for AMX, grants the permission). */
static void wb_cpu_detect(int *f, int request_amx) {
    for (int i = 0; i < WB_F_COUNT; i++) f[i] = 0;
    unsigned int a, b, c, d;
    unsigned int max_leaf = __get_cpuid_max(0, 0);
    if (max_leaf < 1) return;
    __cpuid(1, a, b, c, d);
    int sse42 = (c >> 20) & 1, fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    int f16c = (c >> 29) & 1;
    uint64_t xcr0 = osxsave ? wb_xgetbv0() : 0;
    int os_avx = (xcr0 & 0x6) == 0x6;                 /* XMM | YMM */
    int os_avx512 = os_avx && (xcr0 & 0xE0) == 0xE0;  /* opmask | ZMM_Hi256 | Hi16_ZMM */
    int os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);  /* XTILECFG | XTILEDATA */
    unsigned int b7 = 0, c7 = 0, d7 = 0, a71 = 0;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b7, c7, d7);
        if (a >= 1) { unsigned int bb, cc, dd; __cpuid_count(7, 1, a71, bb, cc, dd); }
    }
    f[WB_F_SSE42] = sse42;
    f[WB_F_OS_AVX] = os_avx;
    f[WB_F_OS_AVX512] = os_avx512;
    f[WB_F_OS_AMX] = os_amx;
    f[WB_F_AVX] = avx && os_avx;
    f[WB_F_FMA] = fma && os_avx;
    f[WB_F_F16C] = f16c && os_avx;
    f[WB_F_AVX2] = ((b7 >> 5) & 1) && os_avx;
    f[WB_F_BMI2] = (b7 >> 8) & 1;
    f[WB_F_AVX512F] = ((b7 >> 16) & 1) && os_avx512;
    f[WB_F_AVX512DQ] = ((b7 >> 17) & 1) && os_avx512;
    f[WB_F_AVX512BW] = ((b7 >> 30) & 1) && os_avx512;
    f[WB_F_AVX512VL] = ((b7 >> 31) & 1) && os_avx512;
    f[WB_F_AVX512_VNNI] = ((c7 >> 11) & 1) && os_avx512;
    f[WB_F_AVX_VNNI] = ((a71 >> 4) & 1) && os_avx;
    int amx_tile = (d7 >> 24) & 1, amx_int8 = (d7 >> 25) & 1, amx_bf16 = (d7 >> 22) & 1;
    int perm = 0;
    if (amx_tile && os_amx && request_amx) perm = wb_request_amx_permission();
    f[WB_F_AMX_PERMISSION] = perm;
    f[WB_F_AMX_TILE] = amx_tile && os_amx && perm;
    f[WB_F_AMX_INT8] = amx_int8 && os_amx && perm;
    f[WB_F_AMX_BF16] = amx_bf16 && os_amx && perm;
}

/* Measure the core clock: a chain of dependent 64-bit integer multiplies (3 cycles of latency
 * on every x86-64 core since Nehalem / K10; 8 per loop iteration, the loop counter runs in
 * parallel) timed with CLOCK_MONOTONIC.  Returns GHz of this run.  (A chain of `add $1` read
 * 8.5 GHz on Zen 5, whose renamer folds dependent immediate adds; multiplies cannot be folded.) */
static double wb_measure_ghz(long iters) {
    struct timespec t0, t1;
    uint64_t acc = 1;
    long n = iters / 3 + 1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    __asm__ volatile(
        "1:\n\t"
        "imul %0, %0\n\t" "imul %0, %0\n\t" "imul %0, %0\n\t" "imul %0, %0\n\t"
        "imul %0, %0\n\t" "imul %0, %0\n\t" "imul %0, %0\n\t" "imul %0, %0\n\t"
        "dec %1\n\t"
        "jnz 1b\n\t"
        : "+r"(acc), "+r"(n) : : "cc");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return s > 0 ? 24.0 * (double)(iters / 3 + 1) / s / 1e9 : 0.0;
}

/* Measure how many multiply instructions of one kind a core issues per nanosecond: 12
 * independent accumulators (enough to cover the latency on every core we know), the loop in
 * assembly so no compiler can merge the chains.  code: 0 = pmaddwd xmm, 1 = vpmaddwd ymm,
 * 2 = vpdpbusd zmm, 3 = vfmadd231ps ymm, 4 = vfmadd231ps zmm.  Divided by wb_measure_ghz this
 * gives the issue rate per cycle, which differs between cores with the same flags: Zen 4 runs
 * a zmm vpdpbusd or FMA as two 256-bit halves (1 per cycle), Ice Lake / Sapphire Rapids server
 * cores issue 2; Zen 2 issues one vpmaddwd ymm per cycle, Intel cores two.  Only call an
 * instruction the CPU has. */
#define WB_RATE_12(op, r, s)                                                                   \
    op " %%" s "14, %%" s "15, %%" r "0\n\t" op " %%" s "14, %%" s "15, %%" r "1\n\t"          \
    op " %%" s "14, %%" s "15, %%" r "2\n\t" op " %%" s "14, %%" s "15, %%" r "3\n\t"          \
    op " %%" s "14, %%" s "15, %%" r "4\n\t" op " %%" s "14, %%" s "15, %%" r "5\n\t"          \
    op " %%" s "14, %%" s "15, %%" r "6\n\t" op " %%" s "14, %%" s "15, %%" r "7\n\t"          \
    op " %%" s "14, %%" s "15, %%" r "8\n\t" op " %%" s "14, %%" s "15, %%" r "9\n\t"          \
    op " %%" s "14, %%" s "15, %%" r "10\n\t" op " %%" s "14, %%" s "15, %%" r "11\n\t"
#define WB_RATE_LOOP(body, after)                                                              \
    __asm__ volatile("1:\n\t" body "dec %0\n\t" "jnz 1b\n\t" after                             \
                     : "+r"(n) : : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", \
                       "xmm7", "xmm8", "xmm9", "xmm10", "xmm11")
static double wb_measure_issue_rate(int code, long iters) {
    struct timespec t0, t1;
    long n = iters > 0 ? iters : 1;
    const long total = n;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (code == 4) {
        WB_RATE_LOOP(WB_RATE_12("vfmadd231ps", "zmm", "zmm"), "vzeroupper\n\t");
    } else if (code == 3) {
        WB_RATE_LOOP(WB_RATE_12("vfmadd231ps", "ymm", "ymm"), "vzeroupper\n\t");
    } else if (code == 2) {
        WB_RATE_LOOP(WB_RATE_12("vpdpbusd", "zmm", "zmm"), "vzeroupper\n\t");
    } else if (code == 1) {
        WB_RATE_LOOP(WB_RATE_12("vpmaddwd", "ymm", "ymm"), "vzeroupper\n\t");
    } else {  /* SSE2, two-operand: pmaddwd src, dst */
#define WB_P(r) "pmaddwd %%xmm14, %%xmm" #r "\n\t"
        WB_RATE_LOOP(WB_P(0) WB_P(1) WB_P(2) WB_P(3) WB_P(4) WB_P(5) WB_P(6) WB_P(7) WB_P(8)
                     WB_P(9) WB_P(10) WB_P(11), "");
#undef WB_P
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return s > 0 ? 12.0 * (double)total / s / 1e9 : 0.0;
}
#undef WB_RATE_LOOP
#undef WB_RATE_12

#endif
