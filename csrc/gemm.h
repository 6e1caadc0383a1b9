// gemm.h -- linear layer kernels: y[M, N] = x[M, K] @ W[N, K]^T + bias[N].
//   x row-major float32 contiguous; W row-major, float32 or bfloat16 stored as uint16 (the high 16 bits of a
//   float32); bias float32 [N] or null; y float32 [M, N] (written, never read).
// `linear_*` dispatch to the fastest instruction set selected in cpu.h; `linear_naive_*` is the triple loop
// the fast paths are tested against. Callers validate shapes; these functions trust them.
#pragma once
#include <cstdint>

namespace omni {
// Wp: null, or W pre-packed by pack_weight_f32 (then a GEMM, M > 8, reads its panels instead of packing W).
void linear_f32(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t N, int64_t K,
                const float* Wp = nullptr);
void linear_bf16(const float* x, const uint16_t* W, const float* bias, float* y, int64_t M, int64_t N, int64_t K);
// One token x [1, K] through n weights W[i] [N[i], K] (no bias) in one parallel region -> y[i] [1, N[i]]: the
// same bits as n linear calls with M = 1 (decode's q, k, v projections share one fork/join).
void gemv_many_f32(const float* x, const float* const* W, float* const* y, const int64_t* N, int n, int64_t K);
void gemv_many_bf16(const float* x, const uint16_t* const* W, float* const* y, const int64_t* N, int n, int64_t K);
// Pre-packing (for weights used many times, e.g. the MoE experts): the GEMM's panel layout of the current
// instruction set (pack_weight in gemm_kernels.inc, packed_block in gemm_core.inc); packed_weight_size floats.
int64_t packed_weight_size(int64_t N, int64_t K);
void pack_weight_f32(const float* W, int64_t N, int64_t K, float* dst);
void linear_naive_f32(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t N, int64_t K);
void linear_naive_bf16(const float* x, const uint16_t* W, const float* bias, float* y, int64_t M, int64_t N,
                       int64_t K);
}  // namespace omni
