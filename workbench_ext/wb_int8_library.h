/* The C side of the int8 layer whose s32 GEMM is a library kernel (LibraryInt8Linear in
 * int8_library.pxi: torch's _int_mm, oneDNN): its activations shifted to s8, and the shared
 * epilogue run over the whole s32 result, threaded, so its outputs are the same bits as the
 * dense kernel's on every ISA. */
#ifndef WB_INT8_LIBRARY_H
#define WB_INT8_LIBRARY_H

#include "wb_int8.h"

/* s8 activations for a s8 x s8 library GEMM: q - 128 (= q ^ 0x80), so the library's sums are
 * sum_k (q - 128) w and the epilogue's zero point becomes zp - 128 (wb_zp_minus_128): exact. */
static void wb_u8_to_s8(const uint8_t *q, size_t n, int8_t *out) {
    for (size_t i = 0; i < n; i++) out[i] = (int8_t)(q[i] ^ 0x80u);
}

static void wb_zp_minus_128(const int32_t *zp, int M, int32_t *out) {
    for (int m = 0; m < M; m++) out[m] = zp[m] - 128;
}

/* Work items: 8 rows x 256 columns of C [M][N] (row-major, ldc = N). */
#define WB_EPI_MATRIX_ROWS 8
#define WB_EPI_MATRIX_COLS 256

typedef struct { const wb_epi_t *e; const int32_t *C; int M, NB, code; } wb_epi_matrix_job_t;

static void wb_epi_matrix_chunk(void *p, long t0, long t1) {
    const wb_epi_matrix_job_t *j = (const wb_epi_matrix_job_t *)p;
    const int N = j->e->N;
    for (long t = t0; t < t1; t++) {
        const int m0 = (int)(t / j->NB) * WB_EPI_MATRIX_ROWS, n0 = (int)(t % j->NB) * WB_EPI_MATRIX_COLS;
        const int mr = wb_imin(WB_EPI_MATRIX_ROWS, j->M - m0), nr = wb_imin(WB_EPI_MATRIX_COLS, N - n0);
        const int32_t *c = j->C + (size_t)m0 * N + n0;
        /* the epilogue each ISA's dense kernel runs (the same float operations on every ISA) */
        if (j->code >= 2) {
            WB_DENSE_AVX512_EPILOGUE(j->e, c, N, m0, mr, n0, nr);
        } else {
            wb_epilogue(j->e, c, N, m0, mr, n0, nr);
            wb_epi_activation(j->e, m0, mr, n0, nr);
        }
    }
}

/* The epilogue (and fused activation) of a whole s32 result C [M][N], on nt threads; `code` is
 * the ISA code (0 portable, 1 AVX2, 2 AVX-512 VNNI, 3 AMX), as for the kernels. */
static void wb_epilogue_matrix(const wb_epi_t *e, const int32_t *C, int M, int code, int nt) {
    const int MB = (M + WB_EPI_MATRIX_ROWS - 1) / WB_EPI_MATRIX_ROWS;
    const int NB = (e->N + WB_EPI_MATRIX_COLS - 1) / WB_EPI_MATRIX_COLS;
    const long total = (long)MB * NB;
    wb_epi_matrix_job_t job = {e, C, M, NB, code};
    wb_parallel_for(nt, total, wb_grain(total, nt, 2), wb_epi_matrix_chunk, &job);
}

#endif
