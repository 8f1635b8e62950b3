/* Shared helpers for the workbench_ext kernels: ISA codes, target attributes, thread counts,
 * per-thread scratch and register transposes.  Per-token u8 quantization is in wb_quant.h,
 * GELU in wb_gelu.h, the int8 dequantize epilogue in wb_epilogue.h.
 *
 * Every ISA-specific function carries its own __attribute__((target(...))), so the extension
 * is compiled with portable flags and still contains the AVX2 / AVX-512 VNNI / AMX code; the
 * caller (workbench_ext.cpu) decides at run time which path may run.
 */
#ifndef WB_COMMON_H
#define WB_COMMON_H

#pragma GCC diagnostic ignored "-Wunused-function"

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <immintrin.h>
#include "wb_pool.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define WB_ISA_PORTABLE 0
#define WB_ISA_AVX2 1
#define WB_ISA_AVX512_VNNI 2
#define WB_ISA_AMX 3

#define WB_AVX2 __attribute__((target("avx2,fma")))
/* Overridable so workbench_ext/testing/emulate_isa.c can compile the AVX-512 / AMX kernels
 * against scalar emulations of their intrinsics (logic test on CPUs without them). */
#ifndef WB_AVX512
#define WB_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#endif
/* AVX-512 float code outside the int8 kernels (never emulated: testing/emulate_isa.c redefines
 * WB_AVX512 only); runs where the ISA check found avx512_vnni. */
#define WB_AVX512F __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#ifndef WB_AMX
#define WB_AMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#endif

/* Row loops of fewer values than this run on the calling thread (wb_ops.h, wb_layernorm.h): a
 * parallel job would cost more than it saves. */
#define WB_PAR_MIN 32768L

/* The sum of a vector's 8 lanes, always in this order: the AVX2 and AVX-512 rows of LayerNorm
 * and softmax reduce through it, which keeps their bits equal. */
WB_AVX2 static inline float wb_hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int wb_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* The calling thread's default for the kernels (its OpenMP setting): cpu.set_num_threads, and
 * Int8Encoder.classify_tokens for one call. */
static inline void wb_set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static inline int wb_threads(int nt) {
    if (nt <= 0) nt = wb_max_threads();
    return nt < 1 ? 1 : nt;
}

/* A scratch buffer of at least `bytes` owned by the calling thread, page-aligned (as
 * int8.aligned_bytes aligns a page or more: where a buffer started in its page changed a
 * forward's speed from process to process), kept and reused for the thread's life (pool workers
 * live as long as the process): kernels that need per-thread scratch in every chunk get it
 * without a malloc per chunk. NULL if out of memory.
 * One buffer per thread: a kernel holding it must not call another kernel that takes it. */
static void *wb_thread_scratch(size_t bytes) {
    static _Thread_local void *buf = NULL;
    static _Thread_local size_t cap = 0;
    if (bytes > cap) {
        size_t want = (bytes + 4095) / 4096 * 4096;
        void *p = aligned_alloc(4096, want);
        if (!p) return NULL;
        free(buf);
        buf = p;
        cap = want;
    }
    return buf;
}

static inline int wb_imin(int a, int b) { return a < b ? a : b; }

/* 8x8 float transpose in registers, and a transposed store of 8 column vectors (lanes = rows)
 * into a row-major matrix (float or int32 bits), limited to mr rows x nc columns. */
WB_AVX2 static inline __attribute__((always_inline)) void wb_transpose8(__m256 *r) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20); r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20); r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31); r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31); r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Store an 8x8 block (R[j] = column j, lanes = rows) transposed into out[rows][N] (float or
 * int32 bits), rows < mr and columns < nc only. */
WB_AVX2 static inline __attribute__((always_inline)) void
wb_store_8x8_t(__m256 *R, int mr, int nc, void *out, size_t ld, size_t elt_off) {
    wb_transpose8(R);
    float *o = (float *)out;
    for (int r = 0; r < mr && r < 8; r++) {
        float *dst = o + (size_t)r * ld + elt_off;
        if (nc == 8) {
            _mm256_storeu_ps(dst, R[r]);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, R[r]);
            for (int j = 0; j < nc; j++) dst[j] = tmp[j];
        }
    }
}

/* 16x16 float transpose in registers (unpack, 4x4 shuffles, then 128-bit lane shuffles). */
WB_AVX512F static inline __attribute__((always_inline)) void wb_transpose16(__m512 *r) {
    __m512 t[16], u[16];
    #pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    #pragma GCC unroll 4
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {            /* 128-bit lanes 0, 2 and 1, 3 of row groups 0/4, 8/12 */
        t[i] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0xDD);
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

#endif
