/* fp32 -> bf16 conversion and the AVX512-BF16 check, shared by the bf16 Linear (wb_bf16.h) and
 * the bf16 attention (wb_attn_bf16.h).
 *
 * Round to nearest, ties to even; inputs that are fp32 denormals become signed zero and NaN stays
 * a quiet NaN -- what VCVTNE2PS2BF16 does, so the scalar `wb_bf16_rne` and the AVX512-BF16
 * conversion give the same bits (tests check both against a NumPy emulation).
 */
#ifndef WB_BF16_CONVERT_H
#define WB_BF16_CONVERT_H

#include "wb_common.h"
#include <cpuid.h>

#define WB_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))

/* CPUID.(EAX=7,ECX=1):EAX[5] (the OS state check is the caller's: workbench_ext.cpu's os_avx512). */
static int wb_cpu_has_avx512_bf16(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || a < 1) return 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1;
}

static inline uint16_t wb_bf16_rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);          /* DAZ: +-0 */
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);   /* quiet NaN */
    u += 0x7FFFu + ((u >> 16) & 1u);                                                /* RNE */
    return (uint16_t)(u >> 16);
}

static inline float wb_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void wb_bf16_convert_portable(const float *x, size_t n, uint16_t *out) {
    for (size_t i = 0; i < n; i++) out[i] = wb_bf16_rne(x[i]);
}

WB_BF16 static void wb_bf16_convert_avx512(const float *x, size_t n, uint16_t *out) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512((void *)(out + i), (__m512i)v);
    }
    for (; i < n; i++) out[i] = wb_bf16_rne(x[i]);
}

#endif
