/* u8 x s8 -> s32 GEMM kernels (dense and 1x4 block-sparse) for workbench_ext.int8.
 *
 * Conventions: the quantized activations are Xq[M][Kp] (u8, Kp = K rounded up to 64, zero
 * padded), weights are packed per path at construction.  All paths produce the exact int32
 * sum_k (q[m,k] - zp[m]) * w[n,k] for a tile (most paths as sum q w, corrected by zp * wsum in
 * wb_epilogue, wb_common.h; the AVX2 dense path centres its activations) and the same float
 * epilogue, so every path computes bit-identical outputs.
 *
 * Dense packed layouts (N padded with zero rows):
 *   portable     int8  [N][Kp]                       (row-major, K padded)
 *   avx2         int16 [ceil(N/16)][Kp/4][2][2][8][2] (pair-product form, see the AVX2 kernel)
 *   avx512_vnni  int8  [NP][Kp/4][16][4]             (4 k per s32 lane for vpdpbusd)
 *   amx          same as avx512_vnni with NP even; a 16-row slab [16 kq][16 n x 4] of a panel
 *                is exactly one B tile (16 rows x 64 bytes) for TDPBUSD.
 * Sparse: CSR of 1x4 blocks (row_ptr[N+1], col[nnzb] = k/4, vals[nnzb][4]); see int8.pyx.
 *
 * Executed on the development machines: portable and AVX2 (AMD EPYC Zen 2 and Zen 3), AVX-512
 * VNNI (Zen 5).  The AMX code is compiled into every build and dispatched only on CPUs that
 * report the features; it is checked against a scalar emulation of its intrinsics
 * (testing/emulate_isa.c) on every machine.
 */
#ifndef WB_INT8_H
#define WB_INT8_H

#include "wb_common.h"

/* One file per job; this header is what int8.pyx and the emulation test include. */
#include "wb_int8_pack.h"
#include "wb_int8_dense_avx2.h"
#include "wb_int8_dense_avx2_u7.h"
#include "wb_int8_dense_vnni.h"
#include "wb_int8_dense_amx.h"
#include "wb_int8_sparse_avx2.h"
#include "wb_int8_sparse_avx2_32.h"
#include "wb_int8_sparse_vnni.h"

#endif
