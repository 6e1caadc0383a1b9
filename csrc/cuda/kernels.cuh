// kernels.cuh -- host entry points of the optional CUDA kernels (built with -DOMNIREF_CUDA=ON).
// All pointers are HOST pointers to row-major float32 arrays; each call copies in, runs, copies out and
// returns a CUDA error string or "" (the caller turns it into a Python exception). Shapes as in ../gemm.h
// and ../attention.h:
//   linear:    y[M, N] = x[M, K] @ W[N, K]^T + bias[N]
//   attention: q [Hq, Lq, D], k/v [Hkv, Lk, D] -> out [Hq, Lq, D]; causal / window / seg / mask as on the CPU.
#pragma once
#include <cstdint>
#include <string>

namespace omni_cuda {
int device_count();
std::string linear(const float* x, const float* W, const float* bias, float* y, int64_t M, int64_t N, int64_t K,
                   bool naive, float* ms);
std::string attention(const float* q, const float* k, const float* v, float* out, int64_t Hq, int64_t Hkv,
                      int64_t Lq, int64_t Lk, int64_t D, bool causal, int64_t window, const int64_t* seg,
                      const uint8_t* mask, float scale, float* ms);
}  // namespace omni_cuda
