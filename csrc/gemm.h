// gemm.h -- linear layer kernels: y[M, N] = x[M, K] @ W[N, K]^T + bias[N].
//   x row-major float32 contiguous; W row-major, float32 or bfloat16 stored as uint16 (the high 16 bits of a
//   float32); bias float32 [N] or null; y float32 [M, N] (written, never read).
// `linear_*` dispatch to the fastest instruction set selected in cpu.h; `linear_naive_*` is the triple loop
// the fast paths are tested against. Callers validate shapes; these functions trust them.
#pragma once
#include <cstdint>

namespace omni {
void linear_f32(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t N, int64_t K);
void linear_bf16(const float* x, const uint16_t* W, const float* bias, float* y, int64_t M, int64_t N, int64_t K);
void linear_naive_f32(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t N, int64_t K);
void linear_naive_bf16(const float* x, const uint16_t* W, const float* bias, float* y, int64_t M, int64_t N,
                       int64_t K);
}  // namespace omni
